"""Engines and sessions for SQLite (the embedded default) and PostgreSQL.

The API and a worker process share the SQLite file, so it runs in WAL mode (readers never
block the writer), with a busy timeout (a second writer waits instead of failing) and
foreign keys on (deleting an experiment cascades to its series and chunks, as on
PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.schemas.jsoncodec import dumps_str

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` for PostgreSQL, using psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for `url`; connects lazily (nothing happens until the first query)."""
    url = normalise_url(url)
    parsed = make_url(url)
    # Non-finite floats in JSON columns (a diverged run's loss) are stored as null.
    kwargs.setdefault("json_serializer", dumps_str)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).update(
            {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        engine = sa.create_engine(url, **kwargs)
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            _create_parent_on_connect(engine, Path(database))
        sa.event.listen(engine, "connect", _configure_sqlite)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # A database that does not answer fails a request (and /health) instead of hanging it.
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 5)
    return sa.create_engine(url, **kwargs)


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: the store converts rows to records after committing.
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def one_off_session(url: str) -> Iterator[Session]:
    """A session on an engine of its own, disposed afterwards: for CLI commands."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _create_parent_on_connect(engine: sa.Engine, path: Path) -> None:
    # Create GRADWATCH_HOME on first use rather than when the engine is built, so that
    # importing the API module touches nothing on disk.
    @sa.event.listens_for(engine, "do_connect")
    def _mkdir(*_: Any) -> None:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Safe with WAL (a power cut may lose the last commits, never corrupt the file).
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
