"""The experiment lifecycle in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service import store
from service.db.models import Experiment

SPEC = {"model": {"type": "mlp"}, "dataset": {"name": "digits"}, "training": {"steps": 40}}


def _create(session: Session, name: str = "exp", tags: list[str] | None = None) -> store.ExperimentRecord:
    return store.create_experiment(session, name, tags or [], SPEC, "cpu")


def test_create_and_get(session: Session) -> None:
    record = _create(session, "sigmoid-2x30", ["seed", "mnist", "seed"])
    assert record.status == "queued"
    assert record.tags == ["seed", "mnist"]
    assert record.progress_total == 40 and record.progress_step == 0
    assert record.created_at.tzinfo is not None
    again = store.get_experiment(session, record.id)
    assert again == record
    assert store.get_experiment(session, "nope") is None


def test_list_filters_and_pages_newest_first(session: Session) -> None:
    ids = [_create(session, f"run-{i}", ["even" if i % 2 == 0 else "odd"]).id for i in range(5)]
    store.claim_experiment(session, ids[1], "w")
    page, total = store.list_experiments(session, offset=0, limit=2)
    assert total == 5 and [r.id for r in page] == [ids[4], ids[3]]
    page, total = store.list_experiments(session, offset=4, limit=2)
    assert total == 5 and [r.id for r in page] == [ids[0]]
    assert store.list_experiments(session, tag="even")[1] == 3
    assert [r.id for r in store.list_experiments(session, status="running")[0]] == [ids[1]]
    assert [r.id for r in store.list_experiments(session, name="run-3")[0]] == [ids[3]]
    assert store.list_experiments(session, name="%")[1] == 0  # LIKE wildcards are literal
    assert store.list_experiments(session, status="failed", tag="even") == ([], 0)


def test_claim_twice_second_returns_none(session: Session) -> None:
    record = _create(session)
    claimed = store.claim_experiment(session, record.id, "worker-1")
    assert claimed is not None and claimed.status == "running" and claimed.worker == "worker-1"
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert store.claim_experiment(session, record.id, "worker-2") is None
    assert store.get_experiment(session, record.id).worker == "worker-1"
    assert store.claim_experiment(session, "missing", "worker-2") is None


def test_claim_is_atomic_across_sessions(engine: sa.Engine) -> None:
    """Racing claims from sessions of their own, released together by a barrier: exactly
    one winner every round (a select-then-update would let two through)."""
    from service.db.engine import make_session_factory

    factory = make_session_factory(engine)
    contenders, rounds = 4, 20
    barrier = threading.Barrier(contenders)

    def claim(experiment_id: str, worker: str) -> str | None:
        with factory() as session:
            session.execute(sa.text("SELECT 1"))  # connected before the race starts
            barrier.wait(timeout=30)
            claimed = store.claim_experiment(session, experiment_id, worker)
            return None if claimed is None else claimed.worker

    with factory() as session:
        ids = [_create(session).id for _ in range(rounds)]
    with ThreadPoolExecutor(contenders) as pool:
        for experiment_id in ids:
            futures = [pool.submit(claim, experiment_id, f"worker-{n}") for n in range(contenders)]
            winners = [w for w in (f.result(timeout=60) for f in futures) if w is not None]
            assert len(winners) == 1, (experiment_id, winners)
            with factory() as session:
                stored = store.get_experiment(session, experiment_id)
            assert stored.status == "running" and stored.worker == winners[0]


def test_cancel_queued_running_and_finished(session: Session) -> None:
    queued = _create(session)
    cancelled = store.request_cancel(session, queued.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert store.claim_experiment(session, queued.id, "w") is None  # never starts

    running = _create(session)
    store.claim_experiment(session, running.id, "w")
    assert not store.is_cancel_requested(session, running.id)
    flagged = store.request_cancel(session, running.id)
    assert flagged.status == "running" and flagged.cancel_requested
    assert store.is_cancel_requested(session, running.id)
    done = store.finish_experiment(session, running.id, "cancelled", {"steps_done": 3})
    assert done is not None and done.status == "cancelled"

    finished = _create(session)
    store.claim_experiment(session, finished.id, "w")
    store.finish_experiment(session, finished.id, "succeeded", {"final_loss": 0.1})
    unchanged = store.request_cancel(session, finished.id)
    assert unchanged.status == "succeeded" and not unchanged.cancel_requested

    with pytest.raises(store.ExperimentNotFound):
        store.request_cancel(session, "missing")


def test_progress_and_finish_only_while_running(session: Session) -> None:
    record = _create(session)
    store.record_progress(session, record.id, 5)  # queued: ignored
    assert store.get_experiment(session, record.id).progress_step == 0
    store.claim_experiment(session, record.id, "w")
    before = store.get_experiment(session, record.id).heartbeat_at
    time.sleep(0.01)
    store.record_progress(session, record.id, 12, total=40)
    after = store.get_experiment(session, record.id)
    assert after.progress_step == 12 and after.heartbeat_at > before
    finished = store.finish_experiment(session, record.id, "diverged", {"diverged_at_step": 12}, None)
    assert finished.status == "diverged" and finished.finished_at is not None
    assert finished.result == {"diverged_at_step": 12}
    # A second finish (a redelivered task, a reaper race) changes nothing.
    assert store.finish_experiment(session, record.id, "failed", None, "late") is None
    assert store.get_experiment(session, record.id).status == "diverged"
    with pytest.raises(ValueError, match="finish status"):
        store.finish_experiment(session, record.id, "running", None)


def test_stale_reaper_fails_silent_runs_only(session: Session) -> None:
    silent, alive, queued = _create(session), _create(session), _create(session)
    for record in (silent, alive):
        store.claim_experiment(session, record.id, "w")
    # The silent run's last heartbeat was 300 s ago.
    row = session.get(Experiment, silent.id)
    row.heartbeat_at = row.heartbeat_at - timedelta(seconds=300)
    session.commit()

    assert store.fail_stale_experiments(session, stale_after_s=120) == [silent.id]
    failed = store.get_experiment(session, silent.id)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error.startswith("worker lost: no heartbeat for 300 s")
    assert store.get_experiment(session, alive.id).status == "running"
    assert store.get_experiment(session, queued.id).status == "queued"
    assert store.fail_stale_experiments(session, stale_after_s=120) == []
    # The worker's late writes no longer change the experiment.
    store.record_progress(session, silent.id, 99)
    assert store.get_experiment(session, silent.id).progress_step == 0


def test_delete_cascades_and_keeps_running_ones_when_asked(session: Session) -> None:
    import numpy as np

    record = _create(session, tags=["a"])
    store.claim_experiment(session, record.id, "w")
    chunk = store.SeriesChunk("loss", None, -1, np.arange(3), np.ones(3))
    store.write_chunks(session, record.id, [chunk], [], progress_step=2)
    assert not store.delete_experiment(session, record.id, keep_running=True)
    assert store.delete_experiment(session, record.id)
    assert store.get_experiment(session, record.id) is None
    for table in ("experiment_tags", "series", "point_chunks"):
        assert session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0
    assert not store.delete_experiment(session, record.id)


def test_fail_unsent_experiment(session: Session) -> None:
    record = _create(session)
    store.fail_unsent_experiment(session, record.id, "broker down")
    failed = store.get_experiment(session, record.id)
    assert failed.status == "failed" and failed.error == "broker down"
