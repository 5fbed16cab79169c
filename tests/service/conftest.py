"""Databases for the service tests: every test that takes `database_url` runs twice, on a
SQLite file and on a fresh PostgreSQL database, both migrated by Alembic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gradwatch.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A database migrated to the latest revision."""
    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session


# The CLI's tests (test_cli.py, test_cli_commands.py): a real API in a thread.


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An `ApiServer` (tests/service/test_cli.py), its token in the CLI's settings."""
    from service.config import settings
    from tests.service.test_cli import ApiServer

    with ApiServer(tmp_path / "home") as server:
        monkeypatch.setattr(settings, "token", server.token)  # what GRADWATCH_TOKEN sets
        yield server


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    """The CLI tests' small digits spec, as a file."""
    from tests.service.test_cli import SPEC

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return path
