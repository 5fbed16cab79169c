"""Checkpoints and attempts: what lets a run whose worker died or shut down resume.

The latest checkpoint of each run is one `checkpoints` row (a blob the worker's engine
made; the store never looks inside). An attempt is one claim by a worker: inserted by
`claim_experiment` in the claiming transaction, ended when the run finishes, when the
worker hands it back (warm shutdown) or when the reaper finds the worker lost. A lost
run goes back to `queued` (dispatched again by service/dispatch.py) until
`max_attempts` attempts were lost, then it is `failed` with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Attempt, Checkpoint, Experiment


@dataclass(frozen=True)
class AttemptRecord:
    number: int
    worker: str
    started_at: datetime
    resumed_from_step: int | None
    ended_at: datetime | None
    ending: str | None  # finished | lost | handed_back; None while it runs
    why: str | None


@dataclass(frozen=True)
class StoredCheckpoint:
    step: int
    payload: bytes


@dataclass(frozen=True)
class ReapOutcome:
    requeued: list[str]
    failed: list[str]


def start_attempt(session: Session, experiment_id: str, worker: str, now: datetime) -> None:
    """In the claiming transaction: the next attempt row, resuming from the checkpoint there is."""
    number = session.execute(
        sa.select(sa.func.coalesce(sa.func.max(Attempt.number), 0)).where(Attempt.experiment_id == experiment_id)
    ).scalar_one()
    resumed_from = session.execute(
        sa.select(Checkpoint.step).where(Checkpoint.experiment_id == experiment_id)
    ).scalar_one_or_none()
    session.add(
        Attempt(experiment_id=experiment_id, number=number + 1, worker=worker, started_at=now, resumed_from_step=resumed_from)
    )


def end_attempt(session: Session, experiment_id: str, ending: str, why: str | None, now: datetime) -> None:
    """In the caller's transaction: end the experiment's open attempt, if it has one."""
    session.execute(
        sa.update(Attempt)
        .where(Attempt.experiment_id == experiment_id, Attempt.ended_at.is_(None))
        .values(ended_at=now, ending=ending, why=why)
    )


# Built once, read as Core rows rather than mapped objects: the status poll reads these on
# every request.
_ATTEMPTS = Attempt.__table__
_ATTEMPTS_OF = (
    sa.select(_ATTEMPTS)
    .where(_ATTEMPTS.c.experiment_id.in_(sa.bindparam("experiment_ids", expanding=True)))
    .order_by(_ATTEMPTS.c.experiment_id, _ATTEMPTS.c.number)
)


def list_attempts(session: Session, experiment_id: str) -> list[AttemptRecord]:
    return list_attempts_of(session, [experiment_id]).get(experiment_id, [])


def list_attempts_of(session: Session, experiment_ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
    """The attempts of each of these experiments (those with none are absent), in one query."""
    rows = session.execute(_ATTEMPTS_OF, {"experiment_ids": list(experiment_ids)})
    found: dict[str, list[AttemptRecord]] = {}
    for row in rows:
        found.setdefault(row.experiment_id, []).append(
            AttemptRecord(row.number, row.worker, row.started_at, row.resumed_from_step, row.ended_at, row.ending, row.why)
        )
    session.commit()  # end the read transaction
    return found


def save_checkpoint(session: Session, experiment_id: str, step: int, payload: bytes) -> bool:
    """Replace the run's checkpoint with this one, if the run is still `running` (a
    deleted, cancelled-and-ended or reaped run gets none); True when it was stored.
    Called only after every point up to `step` is stored (the writer's ordered path)."""
    running = sa.exists().where(Experiment.id == experiment_id, Experiment.status == "running")
    session.execute(
        sa.delete(Checkpoint).where(Checkpoint.experiment_id == experiment_id, Checkpoint.step <= step, running)
    )
    session.execute(
        sa.insert(Checkpoint).from_select(
            ["experiment_id", "step", "payload", "created_at"],
            sa.select(
                Experiment.id,
                sa.literal(step, sa.BigInteger),
                sa.literal(payload, sa.LargeBinary),
                sa.literal(utcnow(), Checkpoint.__table__.c.created_at.type),
            ).where(
                Experiment.id == experiment_id,
                Experiment.status == "running",
                ~sa.exists().where(Checkpoint.experiment_id == experiment_id),
            ),
        )
    )
    # Read back rather than trust the INSERT … SELECT's rowcount, which drivers differ on.
    stored = session.execute(sa.select(Checkpoint.step).where(Checkpoint.experiment_id == experiment_id)).scalar_one_or_none()
    session.commit()
    return stored == step


def load_checkpoint(session: Session, experiment_id: str) -> StoredCheckpoint | None:
    row = session.execute(
        sa.select(Checkpoint.step, Checkpoint.payload).where(Checkpoint.experiment_id == experiment_id)
    ).one_or_none()
    session.commit()
    return None if row is None else StoredCheckpoint(int(row.step), bytes(row.payload))


def clear_checkpoint(session: Session, experiment_id: str) -> None:
    """In the caller's transaction: the run ended, its checkpoint is of no more use."""
    session.execute(sa.delete(Checkpoint).where(Checkpoint.experiment_id == experiment_id))


def hand_back(session: Session, experiment_id: str, worker: str, why: str) -> bool:
    """A worker shutting down gives its running experiment back: `queued` again, never
    dispatched (so the reconciler sends it at once), its attempt ended `handed_back`.
    False (nothing changed) when it is no longer this worker's running run, or a cancel
    was requested: then the worker ends it itself."""
    now = utcnow()
    changed = session.execute(
        sa.update(Experiment)
        .where(
            Experiment.id == experiment_id,
            Experiment.status == "running",
            Experiment.worker == worker,
            Experiment.cancel_requested.is_(False),
        )
        .values(status="queued", dispatched_at=None, heartbeat_at=now)
    )
    if changed.rowcount == 1:
        end_attempt(session, experiment_id, "handed_back", why, now)
    session.commit()
    return changed.rowcount == 1


def reap_stale_experiments(
    session: Session, stale_after_s: float, max_attempts: int, keep_checkpoints: bool = False
) -> ReapOutcome:
    """Running experiments whose worker has not written for `stale_after_s` seconds
    (killed, out of memory, machine gone): back to `queued` to resume from their last
    checkpoint, or `failed` once `max_attempts` attempts were lost (`cancelled` when a
    cancel was asked for). Every change re-checks its conditions: the worker may have
    written since the SELECT."""
    now = utcnow()
    threshold = now - timedelta(seconds=stale_after_s)
    stale = session.execute(
        sa.select(Experiment.id, Experiment.heartbeat_at, Experiment.cancel_requested).where(
            Experiment.status == "running", Experiment.heartbeat_at < threshold
        )
    ).all()
    outcome = ReapOutcome([], [])
    for experiment_id, heartbeat_at, cancel_requested in stale:
        silent_s = int((now - heartbeat_at).total_seconds())
        lost = f"worker lost: no heartbeat for {silent_s} s (stale after {stale_after_s:g} s)"
        lost_before = session.execute(
            sa.select(sa.func.count())
            .select_from(Attempt)
            .where(Attempt.experiment_id == experiment_id, Attempt.ending == "lost")
        ).scalar_one()
        still_stale = (
            Experiment.id == experiment_id,
            Experiment.status == "running",
            Experiment.heartbeat_at < threshold,
        )
        if not cancel_requested and lost_before + 1 < max_attempts:
            changed = session.execute(
                sa.update(Experiment).where(*still_stale).values(status="queued", dispatched_at=None)
            )
            if changed.rowcount == 1:
                end_attempt(session, experiment_id, "lost", f"{lost}; queued again to resume", now)
                outcome.requeued.append(experiment_id)
            continue
        if cancel_requested:
            status, error = "cancelled", f"{lost} after a cancel was requested; the points stored so far are kept"
        else:
            status = "failed"
            error = (
                f"{lost}; {lost_before + 1} of GRADWATCH_MAX_ATTEMPTS = {max_attempts} attempts lost their "
                "worker, so it is not resumed again; the points stored so far are kept"
            )
        changed = session.execute(
            sa.update(Experiment).where(*still_stale).values(status=status, finished_at=now, error=error)
        )
        if changed.rowcount == 1:
            end_attempt(session, experiment_id, "lost", lost, now)
            if not keep_checkpoints:
                clear_checkpoint(session, experiment_id)
            outcome.failed.append(experiment_id)
    session.commit()
    return outcome
