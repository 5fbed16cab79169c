"""Which queued experiments have been handed to the broker, and which may not have been.

The database, not the broker, is the source of truth for what must run: a row that is
`queued` must reach a worker whatever happened to its message. `dispatched_at` records
when its task was last handed to the broker (NULL: committed, never handed over); the
dispatch reconciler (`service/dispatch.py`) reads `undelivered_experiments` and re-sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Experiment


@dataclass(frozen=True)
class DispatchCandidate:
    """A queued experiment whose message may be missing from the broker."""

    id: str
    queue: str
    created_at: datetime
    dispatched_at: datetime | None  # None: never handed to the broker


def mark_dispatched(session: Session, experiment_ids: Sequence[str]) -> int:
    """Record that the tasks of these (still queued) experiments were handed to the broker
    just now; returns how many rows changed."""
    if not experiment_ids:
        return 0
    changed = session.execute(
        sa.update(Experiment)
        .where(Experiment.id.in_(list(experiment_ids)), Experiment.status == "queued")
        .values(dispatched_at=utcnow())
    )
    session.commit()
    return changed.rowcount


def undelivered_experiments(
    session: Session, older_than_s: float, limit: int = 500
) -> list[DispatchCandidate]:
    """Queued experiments last handed to the broker more than `older_than_s` ago, or
    never handed over and committed more than `older_than_s` ago; oldest first.

    The age on a never-dispatched row leaves the API that committed it the time to send
    it itself (a duplicate would be harmless, only wasteful)."""
    threshold = utcnow() - timedelta(seconds=older_than_s)
    rows = session.execute(
        sa.select(Experiment.id, Experiment.queue, Experiment.created_at, Experiment.dispatched_at)
        .where(
            Experiment.status == "queued",
            sa.or_(
                Experiment.dispatched_at < threshold,
                sa.and_(Experiment.dispatched_at.is_(None), Experiment.created_at < threshold),
            ),
        )
        .order_by(Experiment.created_at, Experiment.id)
        .limit(limit)
    ).all()
    session.commit()  # end the read transaction
    return [DispatchCandidate(*row) for row in rows]
