"""`gradwatch token create|list|revoke` as an operator runs them (a process of its own,
straight against the database), and the token's life through HTTP: use, revoke → 401."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from service.api.main import create_app
from service.config import Settings
from tests.conftest import REPO_ROOT
from tests.service.api.conftest import api_client

TINY = {"model": {"type": "mlp", "hidden_sizes": [8]}, "dataset": {"name": "digits"}, "training": {"steps": 5}}


def gradwatch(database_url: str, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    environment.update(GRADWATCH_DATABASE_URL=database_url, GRADWATCH_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=REPO_ROOT, env=environment,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_token_life_cycle(database_url: str, tmp_path: Path) -> None:
    created = gradwatch(database_url, tmp_path, "token", "create", "--owner", "alice", "--scope", "read", "--name", "laptop")
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"gw_[A-Za-z0-9_-]{43}\n", created.stdout), created.stdout  # the token and nothing else
    token = created.stdout.strip()

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            (row,) = connection.execute(sa.text("SELECT * FROM api_tokens")).mappings().all()
    finally:
        engine.dispose()
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert row["owner"] == "alice" and row["name"] == "laptop" and row["scope"] == "read"
    secret = token.removeprefix("gw_")
    assert not any(secret in str(value) or secret[:16] in str(value) for value in row.values())  # only the hash

    listed = gradwatch(database_url, tmp_path, "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert row["id"] in listed.stdout and "alice" in listed.stdout and "laptop" in listed.stdout
    assert secret[:16] not in listed.stdout

    app = create_app(Settings(home=tmp_path, database_url=database_url, reaper_interval_s=0))
    headers = {"Authorization": f"Bearer {token}"}
    with api_client(app, owner=None) as http:
        assert http.get("/api/v1/experiments", headers=headers).status_code == 200
        assert http.post("/api/v1/experiments", json=TINY, headers=headers).status_code == 403  # a read token
        revoked = gradwatch(database_url, tmp_path, "token", "revoke", row["id"])
        assert revoked.returncode == 0, revoked.stderr
        assert f"revoked token {row['id']}" in revoked.stdout
        refused = http.get("/api/v1/experiments", headers=headers)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "unknown or was revoked" in refused.json()["detail"]


def test_token_commands_refuse_bad_input_and_say_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gradwatch.db'}"
    unmigrated = gradwatch(url, tmp_path, "token", "list")
    assert unmigrated.returncode == 1 and "Traceback" not in unmigrated.stderr
    assert "no such table: api_tokens" in unmigrated.stderr and "gradwatch migrate" in unmigrated.stderr
    from service.db.migrate import upgrade

    upgrade(url)
    bad_owner = gradwatch(url, tmp_path, "token", "create", "--owner", "al ice")
    assert bad_owner.returncode == 1 and bad_owner.stdout == ""
    assert "owner 'al ice' is not a valid name" in bad_owner.stderr
    escape = gradwatch(url, tmp_path, "token", "create", "--owner", "alice", "--name", "\x1b[2Jhi")
    assert escape.returncode == 1 and escape.stdout == "" and "control character" in escape.stderr
    unknown = gradwatch(url, tmp_path, "token", "revoke", "0" * 32)
    assert unknown.returncode == 1 and "no token has id" in unknown.stderr and "token list" in unknown.stderr


def test_the_api_refuses_to_start_without_auth_on_a_public_address(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gradwatch.db'}"
    started = gradwatch(url, tmp_path, "api", "--host", "0.0.0.0", "--port", "1", GRADWATCH_AUTH="off")
    assert started.returncode == 1
    assert "GRADWATCH_AUTH=off, but the API would listen on 0.0.0.0" in started.stderr
    assert "GRADWATCH_AUTH=required" in started.stderr
