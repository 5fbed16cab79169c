"""The reaper's clock: reachable time counts from the first success after a failure (or
after the start), and any failure resets it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.exc

from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from service.db.reachability import SLOW_PROBE_S, DatabaseReachability, probe_write
from tests.e2e.stack import free_port


def test_reachable_time_restarts_after_every_failure() -> None:
    now = [100.0]
    reachability = DatabaseReachability(clock=lambda: now[0])
    assert reachability.reachable_for() == 0.0  # the start counts as an outage
    reachability.succeeded()
    now[0] = 130.0
    reachability.succeeded()
    assert reachability.reachable_for() == 30.0
    reachability.failed()  # the database went away
    now[0] = 500.0
    assert reachability.reachable_for() == 0.0
    reachability.succeeded()  # back
    now[0] = 510.0
    assert reachability.reachable_for() == 10.0
    # A write that waited on a lock (SQLite held by another process) or on a server
    # coming back: the outage ended only now.
    started = now[0]
    now[0] += SLOW_PROBE_S + 1
    reachability.succeeded(started)
    assert reachability.reachable_for() == 0.0


def test_the_write_probe_passes_on_a_real_database_and_fails_on_an_absent_one(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        probe_write(make_session_factory(engine))
    finally:
        engine.dispose()
    absent = make_engine(f"postgresql+psycopg://root@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError):
            probe_write(make_session_factory(absent))
    finally:
        absent.dispose()


def test_the_write_probe_fails_on_sqlite_locked_by_another_process(tmp_path: Path) -> None:
    """Reads still work then (WAL), so only a write shows what the reaper could do."""
    url = f"sqlite:///{tmp_path / 'gradwatch.db'}"
    upgrade(url)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()", str(tmp_path / "gradwatch.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    engine = make_engine(url)
    # After the engine's own PRAGMAs: wait 0.2 s on the lock rather than the 30 s default.
    sa.event.listen(engine, "connect", lambda dbapi_connection, _: dbapi_connection.execute("PRAGMA busy_timeout=200"))
    try:
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
            probe_write(make_session_factory(engine))
    finally:
        holder.communicate(b"")
        engine.dispose()
    probe_write_engine = make_engine(url)
    try:
        probe_write(make_session_factory(probe_write_engine))  # released: it goes through
    finally:
        probe_write_engine.dispose()
