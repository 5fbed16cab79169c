"""Nothing stranded in `queued`, on PostgreSQL + Redis: the API SIGKILLed between committing
an experiment and sending its task, and messages deleted from Redis while experiments
wait; the dispatch reconciler (service/dispatch.py) sends them again and they all run,
each trained once."""

from __future__ import annotations

import signal
import time

import pytest
import redis
import sqlalchemy as sa

from service.client import GradwatchError
from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow

REDISPATCH_AFTER_S = 2.0
DISPATCH_INTERVAL_S = 0.5
BOUND_S = REDISPATCH_AFTER_S + DISPATCH_INTERVAL_S  # README, "Failure handling"
SMALL = {
    "name": "small",
    "model": {"type": "mlp", "hidden_sizes": [16]},
    "dataset": {"name": "digits"},
    "training": {"steps": 30, "batch_size": 32, "seed": 0},
}
BLOCKER = {**SMALL, "name": "blocker", "training": {"steps": 1_000_000, "batch_size": 32}}


@pytest.fixture(scope="module")
def stack(make_pg_redis_stack) -> Stack:
    stack = make_pg_redis_stack(
        GRADWATCH_REDISPATCH_AFTER_S=str(REDISPATCH_AFTER_S),
        GRADWATCH_DISPATCH_INTERVAL_S=str(DISPATCH_INTERVAL_S),
        GRADWATCH_WORKER_POLL_S="0.1",
    )
    stack.start_worker()
    return stack


def _rows(stack: Stack) -> dict[str, tuple[str, object]]:
    """id → (status, dispatched_at), read from the database: what HTTP cannot show."""
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, status, dispatched_at FROM experiments")).all()
    finally:
        engine.dispose()
    return {row.id: (row.status, row.dispatched_at) for row in rows}


def test_the_api_killed_between_commit_and_send_still_runs_the_experiment(stack: Stack) -> None:
    doomed = stack.start_api("doomed-api", GRADWATCH_FAULT_KILL_BEFORE_ENQUEUE="true")
    with pytest.raises(GradwatchError):
        stack.client.submit(SMALL)  # the API dies mid-request
    assert doomed.popen.wait(timeout=10) == -signal.SIGKILL
    ((experiment_id, (status, dispatched_at)),) = _rows(stack).items()
    assert status == "queued" and dispatched_at is None  # committed, never handed over

    stack.start_api()  # what compose's `restart: unless-stopped` does
    restarted_at = time.monotonic()
    finished = stack.wait(experiment_id, timeout=120)
    print(f"API restarted → succeeded: {time.monotonic() - restarted_at:.1f} s (bound to reach the broker: {BOUND_S:g} s)")
    assert finished["status"] == "succeeded", finished
    assert finished["progress"]["step"] == 30
    stored, distinct = stack.stored_points(experiment_id)
    assert stored == distinct > 0
    assert _rows(stack)[experiment_id][1] is not None  # the reconciler recorded its dispatch


def test_messages_deleted_from_redis_while_queued_still_all_run(stack: Stack) -> None:
    if stack.client is None or not stack.api_url:
        stack.start_api()
    client = stack.client
    blocker = client.submit(BLOCKER)  # keeps the only worker busy
    stack.wait_for_step(blocker["id"], 1, timeout=120)
    waiting = [client.submit({**SMALL, "name": f"waiting-{i}"})["id"] for i in range(3)]
    broker = redis.Redis.from_url(stack.broker_url)
    try:
        # Past the bound, their messages still wait: the reconciler sends no duplicate.
        time.sleep(BOUND_S + 2 * DISPATCH_INTERVAL_S)
        assert broker.llen("cpu") == 3
        broker.delete("cpu")  # Redis restarted without its data
        assert broker.llen("cpu") == 0
    finally:
        broker.close()
    client.cancel(blocker["id"])
    assert stack.wait(blocker["id"], timeout=60)["status"] == "cancelled"
    for experiment_id in waiting:
        finished = stack.wait(experiment_id, timeout=120)
        assert finished["status"] == "succeeded", finished
        assert finished["progress"]["step"] == 30
        stored, distinct = stack.stored_points(experiment_id)
        assert stored == distinct > 0  # trained once: a duplicate delivery found it claimed
