"""SQLite runs shared between processes (WAL, busy timeout, foreign keys)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from service.db.engine import SQLITE_BUSY_TIMEOUT_MS, make_engine, normalise_url


def test_sqlite_is_configured_for_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "home" / "nested" / "gradwatch.db"
    engine = make_engine(f"sqlite:///{path}")
    assert not path.parent.exists()  # building the engine touches nothing
    try:
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("foreign_keys") == 1
            assert pragma("busy_timeout") == SQLITE_BUSY_TIMEOUT_MS
        assert path.exists()
    finally:
        engine.dispose()


def test_postgres_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert normalise_url("postgres://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_non_finite_json_is_stored_as_null(engine: sa.Engine) -> None:
    from service import store
    from service.db.engine import make_session_factory

    with make_session_factory(engine)() as session:
        record = store.create_experiment(session, "n", [], {"training": {"steps": 3}}, "cpu")
        store.claim_experiment(session, record.id, "w")
        store.finish_experiment(
            session, record.id, "diverged", {"final_loss": float("nan"), "diverged_at_step": 2}
        )
        result = store.get_experiment(session, record.id).result
    assert result == {"final_loss": None, "diverged_at_step": 2}
