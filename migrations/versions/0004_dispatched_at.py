"""When each experiment was handed to the broker: `experiments.dispatched_at`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

NULL means the row was committed but its task was never handed over (the API died in
between); the dispatch reconciler (`service/dispatch.py`) re-sends such rows, and queued
rows whose message has not been seen in the broker since `dispatched_at` plus
GRADWATCH_REDISPATCH_AFTER_S. Existing rows are left NULL: a queued one among them is
re-sent once, which is harmless (the claim is atomic).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("dispatched_at")
