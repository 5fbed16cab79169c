"""Callback rows: created with their experiment or sweep, announced when it ends, leased
for each delivery attempt, and every attempt recorded.

Every state change is a conditional UPDATE, so several API processes running the
delivery loop never announce one run twice nor send one attempt twice: `announce` moves
`waiting` only once, and `lease` bumps `attempts` only if nobody else has.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import FINISHED_STATUSES, Callback, CallbackAttempt, CallbackSecret, Experiment
from service.store.points import _insert

ACTIVE_STATUSES = ("queued", "running")


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class CallbackRecord:
    id: str  # also the event's id, which receivers de-duplicate on
    owner: str
    experiment_id: str | None
    sweep_id: str | None
    url: str
    events: list[str]
    state: str  # waiting | pending | delivered | failed | skipped
    event: dict[str, Any] | None
    created_at: datetime
    triggered_at: datetime | None
    next_attempt_at: datetime | None
    attempts: int
    delivered_at: datetime | None
    last_error: str | None
    history: tuple[AttemptRecord, ...] = ()


def _record(row: Callback, history: tuple[AttemptRecord, ...] = ()) -> CallbackRecord:
    return CallbackRecord(
        row.id, row.owner, row.experiment_id, row.sweep_id, row.url, list(row.events), row.state, row.event,
        row.created_at, row.triggered_at, row.next_attempt_at, row.attempts, row.delivered_at, row.last_error,
        history,
    )


def new_callback(
    owner: str, notify: dict[str, Any], experiment_id: str | None = None, sweep_id: str | None = None
) -> Callback:
    """The row to add in the creating transaction (after its target row is flushed)."""
    return Callback(
        id=uuid.uuid4().hex,
        owner=owner,
        experiment_id=experiment_id,
        sweep_id=sweep_id,
        url=notify["url"],
        events=list(notify["events"]),
        state="waiting",
        created_at=utcnow(),
        attempts=0,
    )


def ended_waiting(session: Session, limit: int = 100) -> list[CallbackRecord]:
    """Waiting callbacks whose experiment has ended, or whose sweep has no member left
    queued or running. Reads the target's state, so every way a run can end (the worker,
    a cancel, the reaper, a broker refusal) is announced without a hook in any of them."""
    sweep_active = (
        sa.select(Experiment.id)
        .where(Experiment.sweep_id == Callback.sweep_id, Experiment.status.in_(ACTIVE_STATUSES))
        .exists()
    )
    experiment_ended = (
        sa.select(Experiment.id)
        .where(Experiment.id == Callback.experiment_id, Experiment.status.in_(FINISHED_STATUSES))
        .exists()
    )
    return _read(
        session,
        sa.select(Callback)
        .where(
            Callback.state == "waiting",
            sa.or_(
                sa.and_(Callback.experiment_id.is_not(None), experiment_ended),
                sa.and_(Callback.sweep_id.is_not(None), ~sweep_active),
            ),
        )
        .order_by(Callback.created_at)
        .limit(limit),
    )


def announce(session: Session, callback_id: str, event: dict[str, Any] | None) -> bool:
    """waiting → pending with its body, due now; or → skipped when `event` is None (the
    end status is not one the caller asked for). False if another process did it first."""
    now = utcnow()
    values: dict[str, Any] = (
        {"state": "skipped", "triggered_at": now}
        if event is None
        else {"state": "pending", "event": event, "triggered_at": now, "next_attempt_at": now}
    )
    changed = session.execute(
        sa.update(Callback).where(Callback.id == callback_id, Callback.state == "waiting").values(**values)
    )
    session.commit()
    return changed.rowcount == 1


def due_callbacks(session: Session, limit: int = 50) -> list[CallbackRecord]:
    return _read(
        session,
        sa.select(Callback)
        .where(Callback.state == "pending", Callback.next_attempt_at <= utcnow())
        .order_by(Callback.next_attempt_at)
        .limit(limit),
    )


def _read(session: Session, statement: sa.Select[tuple[Callback]]) -> list[CallbackRecord]:
    records = [_record(row) for row in session.execute(statement.execution_options(populate_existing=True)).scalars()]
    session.commit()  # end the read transaction
    return records


def lease(session: Session, callback: CallbackRecord, until: datetime) -> int | None:
    """Take the next attempt of a due callback: its number, or None when another process
    took it first. Until `until` nobody else tries; a process that dies mid-attempt
    leaves the callback to be tried again after it (at-least-once delivery)."""
    changed = session.execute(
        sa.update(Callback)
        .where(Callback.id == callback.id, Callback.state == "pending", Callback.attempts == callback.attempts)
        .values(attempts=callback.attempts + 1, next_attempt_at=until)
    )
    session.commit()
    return callback.attempts + 1 if changed.rowcount == 1 else None


def record_attempt(
    session: Session,
    callback_id: str,
    attempt: AttemptRecord,
    outcome: str,
    retry_at: datetime | None = None,
) -> None:
    """Store one attempt and what follows: `delivered`, `failed` (given up), or `pending`
    again at `retry_at`."""
    session.add(
        CallbackAttempt(
            callback_id=callback_id,
            attempt=attempt.attempt,
            started_at=attempt.started_at,
            duration_ms=attempt.duration_ms,
            status_code=attempt.status_code,
            error=attempt.error,
        )
    )
    values: dict[str, Any] = {"state": outcome, "last_error": attempt.error, "next_attempt_at": retry_at}
    if outcome == "delivered":
        values["delivered_at"] = utcnow()
    session.execute(
        sa.update(Callback).where(Callback.id == callback_id, Callback.attempts == attempt.attempt).values(**values)
    )
    session.commit()


def list_callbacks(
    session: Session, experiment_id: str | None = None, sweep_id: str | None = None
) -> list[CallbackRecord]:
    """The callbacks of one experiment or sweep, each with its attempts, oldest first."""
    target = Callback.experiment_id == experiment_id if experiment_id is not None else Callback.sweep_id == sweep_id
    rows = list(
        session.execute(
            sa.select(Callback).where(target).order_by(Callback.created_at).execution_options(populate_existing=True)
        ).scalars()
    )
    attempts: dict[str, list[AttemptRecord]] = {row.id: [] for row in rows}
    if rows:
        for attempt in session.execute(
            sa.select(CallbackAttempt)
            .where(CallbackAttempt.callback_id.in_(list(attempts)))
            .order_by(CallbackAttempt.callback_id, CallbackAttempt.attempt)
        ).scalars():
            attempts[attempt.callback_id].append(
                AttemptRecord(attempt.attempt, attempt.started_at, attempt.duration_ms, attempt.status_code, attempt.error)
            )
    session.commit()
    return [_record(row, tuple(attempts[row.id])) for row in rows]


def new_secret() -> str:
    return "gwcb_" + secrets.token_urlsafe(32)


def callback_secret(session: Session, owner: str) -> str:
    """The owner's signing secret, made on first use (two racing first uses agree: the
    second INSERT does nothing and both read the first's)."""
    session.execute(
        _insert(session, CallbackSecret.__table__)
        .values(owner=owner, secret=new_secret(), created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["owner"])
    )
    secret = session.execute(sa.select(CallbackSecret.secret).where(CallbackSecret.owner == owner)).scalar_one()
    session.commit()
    return secret


def rotate_secret(session: Session, owner: str) -> str:
    """A new secret for the owner; events signed from now on use it."""
    secret = new_secret()
    statement = _insert(session, CallbackSecret.__table__).values(owner=owner, secret=secret, created_at=utcnow())
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["owner"], set_={"secret": secret, "created_at": statement.excluded.created_at}
        )
    )
    session.commit()
    return secret
