"""Revision 0003: the status CHECK admits `timed_out` (and still nothing else), and a
downgrade turns `timed_out` rows back into `cancelled`, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from service.db.engine import make_engine
from service.db.migrate import alembic_config, upgrade

INSERT = sa.text(
    "INSERT INTO experiments (id, name, status, spec, queue, cancel_requested, progress_step, created_at) "
    "VALUES (:id, 'x', :status, '{}', 'cpu', false, 0, CURRENT_TIMESTAMP)"
)


def test_timed_out_is_a_status_and_downgrades_to_cancelled(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(INSERT, {"id": "a" * 32, "status": "timed_out"})
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(INSERT, {"id": "b" * 32, "status": "stopped"})
        engine.dispose()
        command.downgrade(alembic_config(empty_database_url), "0002")
        with engine.begin() as connection:
            assert connection.execute(sa.text("SELECT status FROM experiments")).scalar_one() == "cancelled"
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(INSERT, {"id": "c" * 32, "status": "timed_out"})
    finally:
        engine.dispose()
