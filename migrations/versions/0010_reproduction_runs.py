"""Reproduction runs: which catalogued study each sweep reproduces, for whom, with what changes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

One new table; no existing row changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reproduction_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("study", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("sweep_id", sa.String(length=32), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name="fk_reproduction_runs_sweep_id_sweeps", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_reproduction_runs"),
    )
    op.create_index("ix_reproduction_runs_owner", "reproduction_runs", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_reproduction_runs_owner", table_name="reproduction_runs")
    op.drop_table("reproduction_runs")
