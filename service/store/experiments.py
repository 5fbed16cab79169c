"""The lifecycle of an experiment: create, list, claim, report progress, finish, reap.

Every function that writes is one transaction and commits it. State changes are
conditional UPDATEs (`… WHERE status = 'queued'`), so two processes racing on the same
experiment (a redelivered task, the reaper, a cancel) can never both win.

Ownership is enforced here, not in the routes: every function the API uses to find an
experiment takes `owner` and matches only that owner's rows (None: any owner, for
admins, the worker and the reaper). Someone else's experiment is then simply not found.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import FINISHED_STATUSES, LEGACY_OWNER, Experiment, ExperimentTag
from service.store.callbacks import new_callback
from service.store.idempotency import KeyClaim, claim_key, commit_claimed
from service.store.records import ActiveLimitExceeded, ExperimentNotFound, ExperimentRecord
from service.store.resume import clear_checkpoint, end_attempt, reap_stale_experiments, start_attempt

ACTIVE_STATUSES = ("queued", "running")


def to_record(row: Experiment) -> ExperimentRecord:
    return ExperimentRecord(
        id=row.id,
        name=row.name,
        tags=[tag.tag for tag in row.tag_rows],
        status=row.status,
        spec=row.spec,
        queue=row.queue,
        progress_step=row.progress_step,
        progress_total=row.progress_total,
        cancel_requested=row.cancel_requested,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
        dispatched_at=row.dispatched_at,
        worker=row.worker,
        error=row.error,
        result=row.result,
        sweep_id=row.sweep_id,
        sweep_params=row.sweep_params,
        owner=row.owner,
    )


# ExperimentRecord's fields that are columns of `experiments` (all but the tags).
_RECORD_COLUMNS = tuple(field.name for field in dataclasses.fields(ExperimentRecord) if field.name != "tags")


def _experiment_statement(owned: bool) -> sa.Select[Any]:
    """The status poll's read, the API's most frequent one, built once: the tags in the
    same statement (a join, one row per tag), as Core rows rather than mapped objects.
    Mapped objects, and building the statement on every call, cost about twice the CPU
    (≈ 1.0 against 0.5 ms a read on the development machine)."""
    experiments, tags = Experiment.__table__, ExperimentTag.__table__
    where = [experiments.c.id == sa.bindparam("experiment_id")]
    if owned:
        where.append(experiments.c.owner == sa.bindparam("owner"))
    return (
        sa.select(*(experiments.c[name] for name in _RECORD_COLUMNS), tags.c.tag)
        .select_from(experiments.outerjoin(tags, tags.c.experiment_id == experiments.c.id))
        .where(*where)
        .order_by(tags.c.position)
    )


_EXPERIMENT, _OWNED_EXPERIMENT = _experiment_statement(owned=False), _experiment_statement(owned=True)


def _owned(owner: str | None) -> list[sa.ColumnElement[bool]]:
    return [] if owner is None else [Experiment.owner == owner]


def count_active(session: Session, owner: str) -> int:
    """The owner's queued and running experiments (the `ix_experiments_owner_status` index)."""
    return session.execute(
        sa.select(sa.func.count())
        .select_from(Experiment)
        .where(Experiment.owner == owner, Experiment.status.in_(ACTIVE_STATUSES))
    ).scalar_one()


def check_active_limit(session: Session, owner: str, requested: int, limit: int | None) -> None:
    """Raise ActiveLimitExceeded if `requested` more would take `owner` above `limit`.

    Call inside the transaction that inserts. On PostgreSQL a transaction-scoped advisory
    lock on the owner makes check-and-insert atomic between API processes (two
    submissions racing cannot both pass); SQLite runs one writer at a time, and the
    embedded default has one API process.
    """
    if limit is None:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("gradwatch-owner:" + owner))))
    active = count_active(session, owner)
    if active + requested > limit:
        session.rollback()
        raise ActiveLimitExceeded(owner, active, requested, limit)


def create_experiment(
    session: Session,
    name: str,
    tags: Sequence[str],
    spec: dict[str, Any],
    queue: str,
    sweep_id: str | None = None,
    sweep_params: dict[str, Any] | None = None,
    progress_total: int | None = None,
    owner: str = LEGACY_OWNER,
    max_active: int | None = None,
    idempotency: KeyClaim | None = None,
) -> ExperimentRecord:
    """Insert a queued experiment and commit (the caller enqueues it after this returns).

    `progress_total` defaults to the spec's `training.steps`. With `max_active`, raises
    ActiveLimitExceeded (storing nothing) when the owner already has that many active.
    With `idempotency`, the key is stored in the same transaction, and KeyTaken (storing
    nothing) means another request stored it first. The spec's `notify`, if any, becomes
    a waiting callback in the same transaction too.
    """
    check_active_limit(session, owner, 1, max_active)
    if progress_total is None:
        progress_total = (spec.get("training") or {}).get("steps")
    unique_tags = list(dict.fromkeys(tags))  # the tag table's key is (experiment, tag)
    row = Experiment(
        id=uuid.uuid4().hex,
        name=name,
        owner=owner,
        status="queued",
        spec=spec,
        queue=queue,
        cancel_requested=False,
        progress_step=0,
        progress_total=progress_total,
        created_at=utcnow(),
        sweep_id=sweep_id,
        sweep_params=sweep_params,
        tag_rows=[ExperimentTag(tag=tag, position=i) for i, tag in enumerate(unique_tags)],
    )
    if idempotency is not None:
        claim_key(session, idempotency, row.id)
    session.add(row)
    add_callback(session, owner, spec.get("notify"), experiment_id=row.id)
    commit_claimed(session, idempotency)
    return to_record(row)


def add_callback(
    session: Session, owner: str, notify: dict[str, Any] | None, experiment_id: str | None = None, sweep_id: str | None = None
) -> None:
    """In a creating transaction: the callback row of `notify`, after its target's row."""
    if notify:
        session.flush()  # the callback's foreign key needs its target first (no ORM relationship orders them)
        session.add(new_callback(owner, notify, experiment_id=experiment_id, sweep_id=sweep_id))


def get_experiment(session: Session, experiment_id: str, owner: str | None = None) -> ExperimentRecord | None:
    """The experiment, read fresh from the database, or None (also when `owner` is given
    and it belongs to someone else)."""
    statement = _EXPERIMENT if owner is None else _OWNED_EXPERIMENT
    rows = session.execute(statement, {"experiment_id": experiment_id, "owner": owner}).all()
    if not rows:
        return None
    first = rows[0]._mapping
    return ExperimentRecord(
        tags=[row.tag for row in rows if row.tag is not None], **{name: first[name] for name in _RECORD_COLUMNS}
    )


def _require(session: Session, experiment_id: str, owner: str | None = None) -> ExperimentRecord:
    record = get_experiment(session, experiment_id, owner)
    if record is None:
        raise ExperimentNotFound(experiment_id)
    return record


def list_experiments(
    session: Session,
    status: str | None = None,
    tag: str | None = None,
    name: str | None = None,
    offset: int = 0,
    limit: int = 50,
    owner: str | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[list[ExperimentRecord], int]:
    """One page of experiments, newest first, and the total matching the filters.

    `name` matches as a case-sensitive substring; `tag` must match a whole tag; `owner`
    (None: everyone's) must match exactly; `ids`, when given, narrows to those.
    """
    conditions: list[sa.ColumnElement[bool]] = _owned(owner)
    if ids is not None:
        conditions.append(Experiment.id.in_(list(ids)))
    if status is not None:
        conditions.append(Experiment.status == status)
    if name is not None:
        conditions.append(Experiment.name.contains(name, autoescape=True))
    if tag is not None:
        conditions.append(
            sa.exists().where(ExperimentTag.experiment_id == Experiment.id, ExperimentTag.tag == tag)
        )
    total = session.execute(
        sa.select(sa.func.count()).select_from(Experiment).where(*conditions)
    ).scalar_one()
    rows = session.execute(
        sa.select(Experiment)
        .where(*conditions)
        .order_by(Experiment.created_at.desc(), Experiment.id.desc())
        .offset(offset)
        .limit(limit)
        .execution_options(populate_existing=True)
    ).scalars()
    return [to_record(row) for row in rows], total


def missing_experiments(session: Session, ids: Sequence[str], owner: str | None = None) -> list[str]:
    """The ids in `ids` that no experiment (of `owner`) has, in the order given."""
    found = set(
        session.execute(sa.select(Experiment.id).where(Experiment.id.in_(list(ids)), *_owned(owner))).scalars()
    )
    session.commit()
    return [experiment_id for experiment_id in ids if experiment_id not in found]


def delete_experiment(
    session: Session, experiment_id: str, keep_running: bool = False, owner: str | None = None
) -> bool:
    """Delete the experiment and, through ON DELETE CASCADE, its tags, series and chunks.

    Returns False when nothing was deleted: no such experiment, or it is running and
    `keep_running` is set (the API's choice: a running worker is still writing).
    """
    statement = sa.delete(Experiment).where(Experiment.id == experiment_id, *_owned(owner))
    if keep_running:
        statement = statement.where(Experiment.status != "running")
    deleted = session.execute(statement)
    session.commit()
    return deleted.rowcount > 0


def request_cancel(
    session: Session, experiment_id: str, owner: str | None = None, keep_checkpoint: bool = False
) -> ExperimentRecord:
    """Cancel: a queued experiment (new, or waiting to resume) ends `cancelled` now; a
    running one gets the flag its worker polls (it then stops within a few steps and keeps
    its points); a finished one is left as it is. Raises ExperimentNotFound."""
    now = utcnow()
    cancelled_queued = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == "queued", *_owned(owner))
        .values(status="cancelled", cancel_requested=True, finished_at=now)
    )
    if cancelled_queued.rowcount == 1 and not keep_checkpoint:
        clear_checkpoint(session, experiment_id)
    if cancelled_queued.rowcount == 0:
        session.execute(
            sa.update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.status == "running", *_owned(owner))
            .values(cancel_requested=True)
        )
    session.commit()
    return _require(session, experiment_id, owner)


def claim_experiment(session: Session, experiment_id: str, worker: str) -> ExperimentRecord | None:
    """Atomically move a queued experiment to running for `worker`.

    None when it is not queued (already claimed by a first delivery, finished, cancelled)
    or does not exist: the task must then do nothing. The claim starts the run's next
    attempt in the same transaction; `started_at` keeps the first attempt's start.
    """
    now = utcnow()
    claimed = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == "queued")
        .values(
            status="running", started_at=sa.func.coalesce(Experiment.started_at, now), heartbeat_at=now, worker=worker
        )
    )
    if claimed.rowcount == 1:
        start_attempt(session, experiment_id, worker, now)
    session.commit()
    if claimed.rowcount != 1:
        return None
    return get_experiment(session, experiment_id)


def is_cancel_requested(session: Session, experiment_id: str) -> bool:
    """True once a cancel was requested (or the experiment no longer exists)."""
    flag = session.execute(
        sa.select(Experiment.cancel_requested).where(Experiment.id == experiment_id)
    ).scalar_one_or_none()
    session.commit()  # end the read transaction: the next poll must see new commits
    return flag is None or bool(flag)


def record_progress(
    session: Session, experiment_id: str, step: int, total: int | None = None
) -> None:
    """Set progress and the heartbeat of a running experiment."""
    values: dict[str, Any] = {"progress_step": step, "heartbeat_at": utcnow()}
    if total is not None:
        values["progress_total"] = total
    session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == "running")
        .values(**values)
    )
    session.commit()


def finish_experiment(
    session: Session,
    experiment_id: str,
    status: str,
    result: dict[str, Any] | None,
    error: str | None = None,
    keep_checkpoint: bool = False,
    worker: str | None = None,
) -> ExperimentRecord | None:
    """End a running experiment with `status`, and its attempt; None if it was no longer
    running (e.g. the reaper failed it meanwhile), in which case nothing changes. Its
    checkpoint goes too, unless `keep_checkpoint` (GRADWATCH_KEEP_CHECKPOINTS). With
    `worker`, only that worker's run: one the reaper requeued while its worker was merely
    slow, and another worker has claimed since, is not the slow one's to end."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"finish status must be one of {FINISHED_STATUSES}, got {status!r}")
    now = utcnow()
    mine = [] if worker is None else [Experiment.worker == worker]
    finished = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == "running", *mine)
        .values(status=status, result=result, error=error, finished_at=now, heartbeat_at=now)
    )
    if finished.rowcount == 1:
        end_attempt(session, experiment_id, "finished", status if error is None else f"{status}: {error}", now)
        if not keep_checkpoint:
            clear_checkpoint(session, experiment_id)
    session.commit()
    if finished.rowcount != 1:
        return None
    return get_experiment(session, experiment_id)


def fail_unsent_experiment(session: Session, experiment_id: str, error: str) -> None:
    """Fail a queued experiment whose task could not be sent to the broker."""
    session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == "queued")
        .values(status="failed", error=error, finished_at=utcnow())
    )
    session.commit()


def fail_stale_experiments(session: Session, stale_after_s: float) -> list[str]:
    """Fail running experiments whose worker has not written for `stale_after_s` seconds,
    never requeueing them (`reap_stale_experiments` with one attempt). Returns their ids."""
    return reap_stale_experiments(session, stale_after_s, max_attempts=1).failed
