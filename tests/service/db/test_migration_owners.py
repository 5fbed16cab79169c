"""Migration 0002 on a database with data: existing experiments and sweeps get the owner
`legacy`, which only an admin token sees (and filters with `?owner=legacy`)."""

from __future__ import annotations

import sqlalchemy as sa

from service import store
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from service.store.sweeps import get_sweep, sweep_members


def test_rows_from_before_ownership_belong_to_legacy(empty_database_url: str) -> None:
    upgrade(empty_database_url, "0001")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO sweeps (id, name, base_spec, grid, created_at) VALUES ('s1', 'old sweep', '{}', '{}', CURRENT_TIMESTAMP)")
            )
            connection.execute(
                sa.text(
                    "INSERT INTO experiments (id, name, status, spec, queue, cancel_requested, progress_step, created_at, sweep_id)"
                    " VALUES ('e1', 'old run', 'succeeded', '{}', 'cpu', false, 0, CURRENT_TIMESTAMP, 's1')"
                )
            )
        upgrade(empty_database_url)
        with make_session_factory(engine)() as session:
            assert store.get_experiment(session, "e1").owner == "legacy"
            assert store.get_experiment(session, "e1", owner="alice") is None
            assert [r.id for r in store.list_experiments(session, owner="legacy")[0]] == ["e1"]
            assert get_sweep(session, "s1").owner == "legacy"
            assert get_sweep(session, "s1", owner="alice") is None
            assert [m.id for m in sweep_members(session, "s1", owner="legacy")] == ["e1"]
    finally:
        engine.dispose()
