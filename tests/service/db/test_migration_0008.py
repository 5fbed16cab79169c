"""Revision 0008 backfills the aggregates of chunks written before it, on SQLite and
PostgreSQL, exactly as the store computes them for new chunks, and downgrades cleanly."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import command

from service.db.engine import make_engine
from service.db.migrate import alembic_config, upgrade
from service.store.aggregates import aggregate_record
from service.store.codec import encode_steps, encode_values

CHUNKS = [
    (np.arange(0, 50, dtype=np.int64), np.linspace(1, 2, 50)),
    (np.array([50, 51, 55, 70], dtype=np.int64), np.array([1.0, np.nan, 3.0, -np.inf])),
    (np.array([71], dtype=np.int64), np.array([np.inf])),
]


def test_old_chunks_get_their_aggregates(empty_database_url: str) -> None:
    upgrade(empty_database_url, "0007")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO experiments (id, name, status, spec, queue, cancel_requested, progress_step, created_at) "
                "VALUES (:id, 'x', 'succeeded', '{}', 'cpu', false, 0, CURRENT_TIMESTAMP)"
            ), {"id": "a" * 32})  # fmt: skip
            series_id = connection.execute(sa.text(
                "INSERT INTO series (experiment_id, metric, layer, position) VALUES (:id, 'loss', '', -1) RETURNING id"
            ), {"id": "a" * 32}).scalar_one()  # fmt: skip
            for steps, values in CHUNKS:
                connection.execute(
                    sa.text(
                        "INSERT INTO point_chunks (series_id, first_step, last_step, n_points, steps, \"values\", "
                        "summary_steps, summary_values) VALUES (:s, :f, :l, :n, :st, :v, :st, :v)"
                    ),
                    {"s": series_id, "f": int(steps[0]), "l": int(steps[-1]), "n": len(steps),
                     "st": encode_steps(steps), "v": encode_values(values)},
                )  # fmt: skip
        engine.dispose()
        upgrade(empty_database_url)
        with engine.connect() as connection:
            stored = connection.execute(sa.text("SELECT aggregates FROM point_chunks ORDER BY first_step")).scalars().all()
        assert [bytes(b) for b in stored] == [aggregate_record(s, v).tobytes() for s, v in CHUNKS]
        engine.dispose()
        command.downgrade(alembic_config(empty_database_url), "0007")
        with engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("point_chunks")}
        assert "aggregates" not in columns
    finally:
        engine.dispose()
