"""Checkpoints and attempts in the store: the reaper requeues, hand-backs, cancel, delete."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service import store
from service.db.models import Checkpoint, Experiment

SPEC = {"model": {"type": "mlp"}, "dataset": {"name": "digits"}, "training": {"steps": 40}}


def _running(session: Session, worker: str = "w1") -> str:
    record = store.create_experiment(session, "exp", [], SPEC, "cpu")
    assert store.claim_experiment(session, record.id, worker) is not None
    return record.id


def _silence(session: Session, experiment_id: str, seconds: float = 300) -> None:
    row = session.get(Experiment, experiment_id)
    row.heartbeat_at = row.heartbeat_at - timedelta(seconds=seconds)
    session.commit()


def test_a_lost_run_is_requeued_with_its_checkpoint_then_failed_past_max_attempts(session: Session) -> None:
    experiment_id = _running(session)
    assert store.save_checkpoint(session, experiment_id, 200, b"state-200")
    assert store.save_checkpoint(session, experiment_id, 400, b"state-400")
    assert not store.save_checkpoint(session, experiment_id, 300, b"older")  # never replaces a newer one
    _silence(session, experiment_id)
    outcome = store.reap_stale_experiments(session, 120, max_attempts=2)
    assert outcome.requeued == [experiment_id] and outcome.failed == []
    requeued = store.get_experiment(session, experiment_id)
    assert requeued.status == "queued" and requeued.dispatched_at is None
    assert store.load_checkpoint(session, experiment_id) == store.StoredCheckpoint(400, b"state-400")

    assert store.claim_experiment(session, experiment_id, "w2") is not None
    first, second = store.list_attempts(session, experiment_id)
    assert (first.worker, first.ending, second.worker, second.resumed_from_step) == ("w1", "lost", "w2", 400)
    assert "no heartbeat for 300 s" in first.why and second.ending is None

    _silence(session, experiment_id)
    outcome = store.reap_stale_experiments(session, 120, max_attempts=2)
    assert outcome.failed == [experiment_id]
    failed = store.get_experiment(session, experiment_id)
    assert failed.status == "failed" and "2 of GRADWATCH_MAX_ATTEMPTS = 2" in failed.error
    assert store.load_checkpoint(session, experiment_id) is None  # cleared: the run ended


def test_a_hand_back_requeues_without_using_an_attempt_unless_a_cancel_came_first(session: Session) -> None:
    experiment_id = _running(session, "leaving")
    assert not store.hand_back(session, experiment_id, "another worker", "shutting down")
    assert store.hand_back(session, experiment_id, "leaving", "worker shutting down")
    assert store.get_experiment(session, experiment_id).status == "queued"
    (attempt,) = store.list_attempts(session, experiment_id)
    assert attempt.ending == "handed_back" and attempt.why == "worker shutting down"

    store.claim_experiment(session, experiment_id, "staying")
    store.request_cancel(session, experiment_id)
    assert not store.hand_back(session, experiment_id, "staying", "worker shutting down")
    assert store.get_experiment(session, experiment_id).status == "running"  # the worker ends it cancelled
    _silence(session, experiment_id)
    assert store.reap_stale_experiments(session, 120, max_attempts=1).failed == [experiment_id]
    assert store.get_experiment(session, experiment_id).status == "cancelled"


def test_finish_cancel_and_delete_remove_the_checkpoint_unless_kept(session: Session) -> None:
    finished = _running(session)
    store.save_checkpoint(session, finished, 20, b"x")
    store.finish_experiment(session, finished, "succeeded", {}, keep_checkpoint=True)
    assert store.load_checkpoint(session, finished) is not None
    assert store.list_attempts(session, finished)[-1].ending == "finished"
    assert not store.save_checkpoint(session, finished, 30, b"late")  # the run ended: no new one

    waiting = _running(session)
    store.save_checkpoint(session, waiting, 20, b"x")
    store.hand_back(session, waiting, "w1", "shutting down")
    assert store.request_cancel(session, waiting).status == "cancelled"
    assert store.load_checkpoint(session, waiting) is None

    deleted = _running(session)
    store.save_checkpoint(session, deleted, 20, b"x")
    store.hand_back(session, deleted, "w1", "shutting down")
    assert store.delete_experiment(session, deleted, keep_running=True)
    assert session.execute(sa.select(sa.func.count()).select_from(Checkpoint)).scalar_one() == 1  # `finished`'s
    assert store.list_attempts(session, deleted) == []
