"""The local token of `gradwatch up`: made once, 0600, replaced when the database does
not know it; and what the CLI and client send: GRADWATCH_TOKEN, else the file."""

from __future__ import annotations

from pathlib import Path

from service import store
from service.auth.token_file import configured_token, ensure_local_token
from service.auth.tokens import TOKEN_PREFIX, hash_token, new_token
from service.config import Settings
from service.db.engine import one_off_session
from service.db.migrate import upgrade


def test_first_start_writes_an_admin_token_that_later_starts_keep(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url="")
    upgrade(settings.resolved_database_url)
    assert configured_token(settings) is None
    assert ensure_local_token(settings) is True
    token = settings.token_file.read_text().strip()
    assert token.startswith(TOKEN_PREFIX) and settings.token_file.stat().st_mode & 0o777 == 0o600
    with one_off_session(settings.resolved_database_url) as session:
        record = store.find_active_token(session, hash_token(token))
    assert record is not None and record.scope == "admin" and record.owner == "admin"
    assert configured_token(settings) == token

    assert ensure_local_token(settings) is False  # a second `gradwatch up`
    assert settings.token_file.read_text().strip() == token

    with one_off_session(settings.resolved_database_url) as session:
        store.revoke_token(session, record.id)
    assert ensure_local_token(settings) is True  # a token the database no longer honours is replaced
    assert settings.token_file.read_text().strip() != token


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, token="gw_from-the-environment")
    settings.token_file.write_text(new_token()[0])
    assert configured_token(settings) == "gw_from-the-environment"
