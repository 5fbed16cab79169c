"""Reproduction runs: a catalogued study's protocol, created as a sweep owned by the caller.

The row is inserted in the sweep's own transaction (`create_sweep(…, reproduction=…)`), so
a reproduction run never exists without its sweep, nor the sweep without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.db.models import ReproductionRun


@dataclass(frozen=True)
class NewReproductionRun:
    id: str
    study: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class ReproductionRunRecord:
    id: str
    study: str
    owner: str
    sweep_id: str
    overrides: dict[str, Any]
    created_at: datetime


def add_reproduction_run(session: Session, new: NewReproductionRun, sweep_id: str, owner: str, now: datetime) -> None:
    """Add the row to the caller's transaction (no commit)."""
    session.add(
        ReproductionRun(
            id=new.id, study=new.study, owner=owner, sweep_id=sweep_id, overrides=new.overrides, created_at=now
        )
    )


def get_reproduction_run(session: Session, run_id: str, owner: str | None = None) -> ReproductionRunRecord | None:
    """The run, or None (also when `owner` is given and it is someone else's)."""
    row = session.get(ReproductionRun, run_id, populate_existing=True)
    record = None
    if row is not None and (owner is None or row.owner == owner):
        record = ReproductionRunRecord(
            id=row.id,
            study=row.study,
            owner=row.owner,
            sweep_id=row.sweep_id,
            overrides=dict(row.overrides or {}),
            created_at=row.created_at,
        )
    session.commit()  # end the read transaction
    return record
