"""API tokens, and an owner on every experiment and sweep.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Rows that exist before this revision get the owner `legacy` (the column's server
default): nobody's token owns them, so only an admin token sees them, and an admin can
list them with `?owner=legacy`. The server default stays so that a row inserted without
an owner is never NULL. Only the SHA-256 of a token is stored (service/auth/tokens.py).
On SQLite the new columns and indexes need no table rebuild (ADD COLUMN with a constant
default), so `batch_alter_table` is not needed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "experiments",
        sa.Column("owner", sa.String(length=100), server_default="legacy", nullable=False),
    )
    op.add_column(
        "sweeps", sa.Column("owner", sa.String(length=100), server_default="legacy", nullable=False)
    )
    op.create_index("ix_experiments_owner_created_at", "experiments", ["owner", "created_at"])
    op.create_index("ix_experiments_owner_status", "experiments", ["owner", "status"])
    op.create_index("ix_sweeps_owner", "sweeps", ["owner"])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("scope IN ('read', 'write', 'admin')", name="ck_api_tokens_scope"),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
    )
    op.create_index("ix_api_tokens_token_hash", "api_tokens", ["token_hash"], unique=True)
    op.create_index("ix_api_tokens_owner", "api_tokens", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_api_tokens_owner", table_name="api_tokens")
    op.drop_index("ix_api_tokens_token_hash", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_index("ix_sweeps_owner", table_name="sweeps")
    op.drop_index("ix_experiments_owner_status", table_name="experiments")
    op.drop_index("ix_experiments_owner_created_at", table_name="experiments")
    # DROP COLUMN needs a table rebuild on SQLite: batch mode does it.
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("owner")
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("owner")
