"""Experiments may end `timed_out`: stopped by their `training.max_runtime_s`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Only the status CHECK constraint changes. SQLite cannot alter a constraint in place, so
the table is rebuilt through `batch_alter_table` (PostgreSQL alters it directly); the
constraint keeps the name the models' naming convention gives it. Downgrading first ends
any `timed_out` row as `cancelled`, the state such a run had before this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_TIMED_OUT = "status IN ('queued', 'running', 'succeeded', 'failed', 'diverged', 'cancelled', 'timed_out')"
WITHOUT_TIMED_OUT = "status IN ('queued', 'running', 'succeeded', 'failed', 'diverged', 'cancelled')"


def _replace_status_check(condition: str) -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_constraint("ck_experiments_status", type_="check")
        batch.create_check_constraint("ck_experiments_status", condition)


def upgrade() -> None:
    _replace_status_check(WITH_TIMED_OUT)


def downgrade() -> None:
    op.execute(sa.text("UPDATE experiments SET status = 'cancelled' WHERE status = 'timed_out'"))
    _replace_status_check(WITHOUT_TIMED_OUT)
