"""Histograms of gradients and activations, one row per (metric, layer) and flush.

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-01

A new table only; no existing row changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "histogram_chunks",
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("layer", sa.String(length=200), nullable=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("n_steps", sa.Integer(), nullable=False),
        sa.Column("bins", sa.Integer(), nullable=False),
        sa.Column("first_edge", sa.Float(), nullable=False),
        sa.Column("last_edge", sa.Float(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_histogram_chunks_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id", "metric", "layer", "first_step", name="pk_histogram_chunks"
        ),
    )


def downgrade() -> None:
    op.drop_table("histogram_chunks")
