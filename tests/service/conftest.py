"""Databases for the service tests: every test that takes `database_url` runs twice, on a
SQLite file and on a fresh PostgreSQL database, both migrated by Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
