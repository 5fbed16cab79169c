"""Initial schema: experiments and their tags, series stored as chunks, sweeps.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Reviewed by hand after autogenerate: timestamps are plain `DateTime(timezone=True)` (the
models' `UTCDateTime` only adds Python-side UTC handling), every constraint and index
carries the name the models' naming convention gives it, and tables are created parents
first so the foreign keys (with their ON DELETE rules) resolve on both SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("base_spec", sa.JSON(), nullable=False),
        sa.Column("grid", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sweeps"),
    )

    op.create_table(
        "experiments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("progress_step", sa.BigInteger(), nullable=False),
        sa.Column("progress_total", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("sweep_id", sa.String(length=32), nullable=True),
        sa.Column("sweep_params", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'diverged', 'cancelled')",
            name="ck_experiments_status",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name="fk_experiments_sweep_id_sweeps", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
    )
    op.create_index("ix_experiments_created_at", "experiments", ["created_at"])
    op.create_index("ix_experiments_name", "experiments", ["name"])
    op.create_index("ix_experiments_status_created_at", "experiments", ["status", "created_at"])
    op.create_index("ix_experiments_sweep_id", "experiments", ["sweep_id"])

    op.create_table(
        "experiment_tags",
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_experiment_tags_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("experiment_id", "tag", name="pk_experiment_tags"),
    )
    op.create_index("ix_experiment_tags_tag", "experiment_tags", ["tag"])

    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("layer", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_series_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint(
            "experiment_id", "metric", "layer", name="uq_series_experiment_id_metric_layer"
        ),
    )

    # One row per (series, flush); the primary key is what a series query scans and what
    # makes a retried batch a no-op (ON CONFLICT DO NOTHING).
    op.create_table(
        "point_chunks",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("n_points", sa.Integer(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False),
        # The chunk's representative points (first, last, min, max, first non-finite):
        # what a minmax-thinned series query reads instead of `steps` and `values`.
        sa.Column("summary_steps", sa.LargeBinary(), nullable=False),
        sa.Column("summary_values", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name="fk_point_chunks_series_id_series", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("series_id", "first_step", name="pk_point_chunks"),
    )
    # Covers the thinned read (summary columns in step order) so it can skip the table.
    op.create_index(
        "ix_point_chunks_summary",
        "point_chunks",
        ["series_id", "first_step", "last_step", "summary_steps", "summary_values"],
    )

    op.create_table(
        "timestep_chunks",
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("layer_index", sa.Integer(), nullable=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("n_steps", sa.Integer(), nullable=False),
        sa.Column("n_timesteps", sa.Integer(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("timesteps", sa.LargeBinary(), nullable=False),
        sa.Column("hidden_grad_norm", sa.LargeBinary(), nullable=False),
        sa.Column("cell_grad_norm", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_timestep_chunks_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id", "layer_index", "first_step", name="pk_timestep_chunks"
        ),
    )


def downgrade() -> None:
    op.drop_table("timestep_chunks")
    op.drop_index("ix_point_chunks_summary", table_name="point_chunks")
    op.drop_table("point_chunks")
    op.drop_table("series")
    op.drop_index("ix_experiment_tags_tag", table_name="experiment_tags")
    op.drop_table("experiment_tags")
    op.drop_index("ix_experiments_sweep_id", table_name="experiments")
    op.drop_index("ix_experiments_status_created_at", table_name="experiments")
    op.drop_index("ix_experiments_name", table_name="experiments")
    op.drop_index("ix_experiments_created_at", table_name="experiments")
    op.drop_table("experiments")
    op.drop_table("sweeps")
