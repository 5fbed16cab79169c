"""Aggregates per chunk of points: `point_chunks.aggregates`, backfilled.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Each chunk gets one 40-byte record (service/store/aggregates.py): first and last step,
number of points, spacing of its steps (0 when uneven) and the sum of its values, which
`agg=mean` and `/profile` read instead of every point. Existing chunks are backfilled here,
a batch of rows at a time in primary-key order; the layout is written out below rather than
imported, so that this revision keeps producing what it produced when it was written. The
covering index of the thinned read is rebuilt to include the new column, so that both reads
stay index-only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_ROWS = 2000
AGGREGATE_DTYPE = np.dtype(
    [("first_step", "<i8"), ("last_step", "<i8"), ("n_points", "<i8"), ("stride", "<i8"), ("value_sum", "<f8")]
)
INDEX_BEFORE = ["series_id", "first_step", "last_step", "summary_steps", "summary_values"]


def _aggregates(steps_bytes: bytes, values_bytes: bytes) -> bytes:
    steps = np.frombuffer(steps_bytes, dtype="<i8")
    values = np.frombuffer(values_bytes, dtype="<f8")
    gaps = np.diff(steps)
    stride = int(gaps[0]) if len(gaps) and bool(np.all(gaps == gaps[0])) else 0
    record = np.zeros(1, dtype=AGGREGATE_DTYPE)
    with np.errstate(invalid="ignore", over="ignore"):
        record[0] = (int(steps[0]), int(steps[-1]), len(steps), stride, float(np.sum(values)))
    return record.tobytes()


def _backfill() -> None:
    chunks = sa.table(
        "point_chunks",
        sa.column("series_id", sa.Integer),
        sa.column("first_step", sa.BigInteger),
        sa.column("steps", sa.LargeBinary),
        sa.column("values", sa.LargeBinary),
        sa.column("aggregates", sa.LargeBinary),
    )
    connection = op.get_bind()
    after = (-1, -(2**63))
    while True:
        rows = connection.execute(
            sa.select(chunks.c.series_id, chunks.c.first_step, chunks.c.steps, chunks.c["values"])
            .where(sa.tuple_(chunks.c.series_id, chunks.c.first_step) > sa.tuple_(*after))
            .order_by(chunks.c.series_id, chunks.c.first_step)
            .limit(BATCH_ROWS)
        ).all()
        if not rows:
            return
        connection.execute(
            sa.update(chunks)
            .where(chunks.c.series_id == sa.bindparam("b_series"), chunks.c.first_step == sa.bindparam("b_first"))
            .values(aggregates=sa.bindparam("b_aggregates")),
            [{"b_series": r.series_id, "b_first": r.first_step, "b_aggregates": _aggregates(r.steps, r[3])} for r in rows],
        )
        after = (rows[-1].series_id, rows[-1].first_step)


def upgrade() -> None:
    with op.batch_alter_table("point_chunks") as batch:
        batch.add_column(sa.Column("aggregates", sa.LargeBinary(), nullable=True))
    _backfill()
    op.drop_index("ix_point_chunks_summary", table_name="point_chunks")
    op.create_index("ix_point_chunks_summary", "point_chunks", [*INDEX_BEFORE, "aggregates"])


def downgrade() -> None:
    op.drop_index("ix_point_chunks_summary", table_name="point_chunks")
    with op.batch_alter_table("point_chunks") as batch:
        batch.drop_column("aggregates")
    op.create_index("ix_point_chunks_summary", "point_chunks", INDEX_BEFORE)
