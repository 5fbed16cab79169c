"""INSERT … ON CONFLICT for the two databases gradwatch runs on."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


def insert_for(session: Session, table: Any) -> Any:
    """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(f"gradwatch supports SQLite and PostgreSQL, not {dialect}")
    return insert(table)
