"""Every queued experiment reaches a worker: hand it to the broker after its commit, and
reconcile the database with the broker afterwards.

The database is the source of truth for what must run; a broker message is only a
wake-up call, and one can be lost two ways:
- the API dies between committing the row and sending its task: `dispatched_at` stays
  NULL;
- the broker loses it (Redis restarted without its data, the embedded broker's message
  files removed, a worker that took it died before claiming it on a broker that does
  not redeliver).
`reconcile_once` (run by every API process every `dispatch_interval_s`) finds queued rows
last dispatched more than `redispatch_after_s` ago (or never), skips those whose message
still waits in the broker (only refreshing their `dispatched_at`), and sends the others
again. Bound: a queued experiment's task is back in the broker at most
`redispatch_after_s + dispatch_interval_s` after it went missing, while an API runs.

A duplicate message is harmless: the task claims its row atomically (`queued → running`),
so a second delivery finds it claimed and does nothing; the reconciler therefore errs on
the side of sending again.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from service import store
from service.config import Settings
from service.queue import Enqueuer
from service.store import ExperimentRecord

log = logging.getLogger("gradwatch.dispatch")


def hand_over(
    session: Session, enqueuer: Enqueuer, records: Sequence[ExperimentRecord], settings: Settings
) -> list[tuple[ExperimentRecord, Exception]]:
    """Send the tasks of freshly committed experiments and record their dispatch; returns
    the experiments the broker refused, with its error (the caller decides what to say)."""
    if settings.fault_kill_before_enqueue:
        # Test-only fault injection: the rows are committed, no task has been sent.
        os.kill(os.getpid(), signal.SIGKILL)
    sent: list[str] = []
    refused: list[tuple[ExperimentRecord, Exception]] = []
    for record in records:
        try:
            enqueuer.enqueue(record.id, record.queue)
            sent.append(record.id)
        except Exception as error:  # noqa: BLE001 - any broker failure means the same here
            refused.append((record, error))
    # If this process dies (or the database fails) before this commit, the reconciler
    # finds the rows undispatched, sees their messages waiting in the broker, and only
    # records the dispatch.
    store.mark_dispatched(session, sent)
    return refused


def reconcile_once(
    session_factory: Callable[[], Session], enqueuer: Enqueuer, settings: Settings
) -> list[str]:
    """Send again the queued experiments whose task is not waiting in the broker
    `redispatch_after_s` after their last dispatch; returns their ids."""
    with session_factory() as session:
        candidates = store.undelivered_experiments(session, settings.redispatch_after_s)
        if not candidates:
            return []
        waiting: dict[str, set[str] | None] = {}
        for queue in {candidate.queue for candidate in candidates}:
            waiting[queue] = enqueuer.waiting_ids(queue)
        still_waiting = [c.id for c in candidates if c.id in (waiting[c.queue] or ())]
        sent: list[str] = []
        for candidate in candidates:
            if candidate.id in still_waiting:
                continue
            try:
                enqueuer.enqueue(candidate.id, candidate.queue)
            except Exception:  # noqa: BLE001 - the broker is down: try again next pass
                log.warning("could not send experiment %s again", candidate.id, exc_info=True)
                continue
            sent.append(candidate.id)
            since = (
                "never handed to the broker"
                if candidate.dispatched_at is None
                else f"not in the broker since its dispatch at {candidate.dispatched_at:%H:%M:%S}"
            )
            log.warning("experiment %s was queued but %s: sent it again", candidate.id, since)
        # Both kinds start a new redispatch_after_s: the broker holds their message now.
        store.mark_dispatched(session, still_waiting + sent)
    return sent


def send_requeued(session: Session, enqueuer: Enqueuer, experiment_ids: Sequence[str]) -> list[str]:
    """Send the tasks of experiments just put back to `queued` (the reaper's lost runs, to
    resume from their checkpoint) and record their dispatch; returns those sent. One the
    broker refuses stays undispatched, and `reconcile_once` sends it on a later pass."""
    sent: list[str] = []
    for experiment_id in experiment_ids:
        record = store.get_experiment(session, experiment_id)
        if record is None or record.status != "queued":
            continue  # cancelled or deleted meanwhile
        try:
            enqueuer.enqueue(record.id, record.queue)
        except Exception:  # noqa: BLE001 - the broker is down: the reconciler retries
            log.warning("could not send requeued experiment %s; the reconciler will", experiment_id, exc_info=True)
            continue
        sent.append(experiment_id)
    store.mark_dispatched(session, sent)
    return sent
