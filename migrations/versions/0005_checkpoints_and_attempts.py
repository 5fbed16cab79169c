"""Checkpoints and attempts: runs that resume where they stopped.

Revision ID: 0005
Revises: 0008
Create Date: 2026-12-01

`checkpoints` holds the latest checkpoint of each run (a blob, so every worker reads it
without a shared volume); `attempts` one row per claim of an experiment by a worker.
Both go with their experiment (ON DELETE CASCADE).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name="fk_checkpoints_experiment_id_experiments", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("experiment_id", name="pk_checkpoints"),
    )
    op.create_table(
        "attempts",
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resumed_from_step", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ending", sa.String(length=16), nullable=True),
        sa.Column("why", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name="fk_attempts_experiment_id_experiments", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("experiment_id", "number", name="pk_attempts"),
    )


def downgrade() -> None:
    op.drop_table("attempts")
    op.drop_table("checkpoints")
