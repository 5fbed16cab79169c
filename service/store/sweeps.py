"""Sweeps: a grid of experiments created together from one base spec.

A sweep and all its member experiments are inserted in one transaction, so a sweep is
never half-created; the caller enqueues the members after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import LEGACY_OWNER, Experiment, ExperimentTag, Sweep
from service.store.experiments import add_callback, check_active_limit, to_record
from service.store.idempotency import KeyClaim, KeyTaken, claim_key, commit_claimed
from service.store.records import ExperimentRecord
from service.store.reproductions import NewReproductionRun, add_reproduction_run


@dataclass(frozen=True)
class SweepRecord:
    id: str
    name: str
    base_spec: dict[str, Any]  # as submitted (before the grid's values are applied)
    grid: dict[str, list[Any]]  # dotted spec path → values, in the order submitted
    created_at: datetime
    owner: str


@dataclass(frozen=True)
class NewMember:
    """One member to create: its validated spec as JSON and its grid values."""

    name: str
    tags: Sequence[str]
    spec: dict[str, Any]
    queue: str
    params: dict[str, Any]


def _to_sweep(row: Sweep) -> SweepRecord:
    return SweepRecord(
        id=row.id, name=row.name, base_spec=row.base_spec, grid=row.grid, created_at=row.created_at, owner=row.owner
    )


def create_sweep(
    session: Session,
    name: str,
    base_spec: dict[str, Any],
    grid: dict[str, list[Any]],
    members: Sequence[NewMember],
    owner: str = LEGACY_OWNER,
    max_active: int | None = None,
    notify: dict[str, Any] | None = None,
    idempotency: KeyClaim | None = None,
    reproduction: NewReproductionRun | None = None,
) -> tuple[SweepRecord, list[ExperimentRecord]]:
    """Insert the sweep and its queued members (all owned by `owner`) in one transaction
    and commit; with `max_active`, ActiveLimitExceeded when the members would take the
    owner's queued + running experiments above it (nothing is stored then). `notify`
    (the sweep's) and each member spec's `notify` become waiting callbacks, and
    `idempotency` is stored, in the same transaction (KeyTaken: another request stored
    the key first, and nothing was stored). `reproduction` records which catalogued study
    the sweep reproduces, in the same transaction."""
    now = utcnow()
    sweep = Sweep(id=uuid.uuid4().hex, name=name, owner=owner, base_spec=base_spec, grid=grid, created_at=now)
    try:
        check_active_limit(session, owner, len(members), max_active)
        if idempotency is not None:
            claim_key(session, idempotency, sweep.id)
        session.add(sweep)
        session.flush()  # the members' foreign key needs the sweep row first (no ORM relationship orders them)
        rows = [
            Experiment(
                id=uuid.uuid4().hex,
                name=member.name,
                owner=owner,
                status="queued",
                spec=member.spec,
                queue=member.queue,
                cancel_requested=False,
                progress_step=0,
                progress_total=(member.spec.get("training") or {}).get("steps"),
                created_at=now,
                sweep_id=sweep.id,
                sweep_params=member.params,
                tag_rows=[ExperimentTag(tag=tag, position=i) for i, tag in enumerate(dict.fromkeys(member.tags))],
            )
            for member in members
        ]
        session.add_all(rows)
        add_callback(session, owner, notify, sweep_id=sweep.id)
        if reproduction is not None:
            add_reproduction_run(session, reproduction, sweep.id, owner, now)
        for row in rows:
            add_callback(session, owner, row.spec.get("notify"), experiment_id=row.id)
        commit_claimed(session, idempotency)
    except KeyTaken:
        raise  # already rolled back
    except BaseException:
        session.rollback()
        raise
    return _to_sweep(sweep), [to_record(row) for row in rows]


def get_sweep(session: Session, sweep_id: str, owner: str | None = None) -> SweepRecord | None:
    """The sweep, or None (also when `owner` is given and it is someone else's)."""
    row = session.get(Sweep, sweep_id, populate_existing=True)
    if row is None or (owner is not None and row.owner != owner):
        return None
    return _to_sweep(row)


def sweep_members(session: Session, sweep_id: str, owner: str | None = None) -> list[ExperimentRecord]:
    """The sweep's experiments as they are now (deleted members are gone); with `owner`,
    only that owner's (members always belong to their sweep's owner)."""
    owned = [] if owner is None else [Experiment.owner == owner]
    rows = session.execute(
        sa.select(Experiment)
        .where(Experiment.sweep_id == sweep_id, *owned)
        .order_by(Experiment.created_at, Experiment.id)
        .execution_options(populate_existing=True)
    ).scalars()
    records = [to_record(row) for row in rows]
    session.commit()  # end the read transaction
    return records


def list_sweeps(
    session: Session, owner: str | None = None, name: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[tuple[SweepRecord, dict[str, int]]], int]:
    """One page of sweeps, newest first, each with its members' count per status, and the
    total matching. `owner` None: everyone's; `name` matches as a substring."""
    conditions: list[sa.ColumnElement[bool]] = [] if owner is None else [Sweep.owner == owner]
    if name is not None:
        conditions.append(Sweep.name.contains(name, autoescape=True))
    total = session.execute(sa.select(sa.func.count()).select_from(Sweep).where(*conditions)).scalar_one()
    rows = list(
        session.execute(
            sa.select(Sweep)
            .where(*conditions)
            .order_by(Sweep.created_at.desc(), Sweep.id.desc())
            .offset(offset)
            .limit(limit)
            .execution_options(populate_existing=True)
        ).scalars()
    )
    counts: dict[str, dict[str, int]] = {row.id: {} for row in rows}
    if rows:
        # One grouped count for the page, not a query per sweep.
        for sweep_id, status, count in session.execute(
            sa.select(Experiment.sweep_id, Experiment.status, sa.func.count())
            .where(Experiment.sweep_id.in_(list(counts)))
            .group_by(Experiment.sweep_id, Experiment.status)
        ):
            counts[sweep_id][status] = count
    page = [(_to_sweep(row), counts[row.id]) for row in rows]
    session.commit()  # end the read transaction
    return page, total
