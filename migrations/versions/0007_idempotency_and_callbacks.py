"""Idempotency keys, callbacks with their delivery attempts, per-owner callback secrets.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01

New tables only, parents first; every constraint and index carries the name the models'
naming convention gives it. No existing row changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('experiment', 'sweep')", name="ck_idempotency_keys_kind"),
        sa.PrimaryKeyConstraint("owner", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])

    op.create_table(
        "callbacks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=True),
        sa.Column("sweep_id", sa.String(length=32), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("event", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('waiting', 'pending', 'delivered', 'failed', 'skipped')", name="ck_callbacks_state"
        ),
        sa.CheckConstraint("(experiment_id IS NULL) <> (sweep_id IS NULL)", name="ck_callbacks_one_target"),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_callbacks_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name="fk_callbacks_sweep_id_sweeps", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_callbacks"),
    )
    op.create_index("ix_callbacks_state_next_attempt_at", "callbacks", ["state", "next_attempt_at"])
    op.create_index("ix_callbacks_experiment_id", "callbacks", ["experiment_id"])
    op.create_index("ix_callbacks_sweep_id", "callbacks", ["sweep_id"])

    op.create_table(
        "callback_attempts",
        sa.Column("callback_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["callback_id"],
            ["callbacks.id"],
            name="fk_callback_attempts_callback_id_callbacks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("callback_id", "attempt", name="pk_callback_attempts"),
    )

    op.create_table(
        "callback_secrets",
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_callback_secrets"),
    )


def downgrade() -> None:
    op.drop_table("callback_secrets")
    op.drop_table("callback_attempts")
    op.drop_index("ix_callbacks_sweep_id", table_name="callbacks")
    op.drop_index("ix_callbacks_experiment_id", table_name="callbacks")
    op.drop_index("ix_callbacks_state_next_attempt_at", table_name="callbacks")
    op.drop_table("callbacks")
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
