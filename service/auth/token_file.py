"""The local token: `gradwatch up` writes one admin token to `$GRADWATCH_HOME/token`
(mode 0600) on first start; the CLI and `GradwatchClient` send GRADWATCH_TOKEN, else it.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.config import Settings

LOCAL_OWNER_FOR_UP = "admin"
LOCAL_TOKEN_NAME = "gradwatch up (local)"


def read_token_file(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None
    return token or None


def configured_token(settings: Settings) -> str | None:
    """GRADWATCH_TOKEN, else the token file's contents, else None."""
    return settings.token or read_token_file(settings.token_file)


def write_token_file(path: Path, token: str) -> None:
    """Write `token` readable by its owner only: created 0600, never world-readable even
    for an instant (the mode is given to open(), not set afterwards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as output:
        output.write(token + "\n")
    os.chmod(temporary, 0o600)  # an existing file keeps its old mode through O_CREAT
    os.replace(temporary, path)


def ensure_local_token(settings: Settings) -> bool:
    """Make sure `$GRADWATCH_HOME/token` holds a live admin token; True if it made one.

    A file whose token the database does not know (a wiped or different database) is
    replaced, so `gradwatch up` always leaves a token that works.
    """
    # Imported here: the client reads the token file without loading the store.
    from service import store
    from service.auth.tokens import Scope, hash_token, issue_token
    from service.db.engine import one_off_session

    existing = read_token_file(settings.token_file)
    with one_off_session(settings.resolved_database_url) as session:
        if existing is not None and store.find_active_token(session, hash_token(existing)) is not None:
            return False
        token = issue_token(session, LOCAL_OWNER_FOR_UP, Scope.admin, LOCAL_TOKEN_NAME)
    write_token_file(settings.token_file, token)
    return True
