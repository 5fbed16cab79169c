"""A worker killed with SIGKILL in the middle of a run, on PostgreSQL + Redis.

With GRADWATCH_MAX_ATTEMPTS=1 the run is not resumed (tests/e2e/test_resume.py covers
that), so the stale-heartbeat reaper in the API marks it `failed` once its writer has
been silent for GRADWATCH_HEARTBEAT_STALE_S; no point is
stored twice; the API keeps serving throughout. Then Redis redelivers the message the
dead worker never acknowledged (acks_late) to a new worker, which finds the experiment
no longer queued and does nothing.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow

# Long enough for a pool child on a loaded 2-core machine to import torch and load the
# data before its writer sends the first heartbeat (4 s was not: the run was reaped at step 0).
STALE_S = 10.0
LONG_RUN = {
    "name": "killed-mid-run",
    "model": {"type": "mlp", "hidden_sizes": [64, 64]},
    "dataset": {"name": "digits"},
    "training": {"steps": 1_000_000, "batch_size": 32},
}


@pytest.fixture(scope="module")
def stack(make_pg_redis_stack) -> Stack:
    stack = make_pg_redis_stack(
        GRADWATCH_HEARTBEAT_STALE_S=str(STALE_S),
        GRADWATCH_REAPER_INTERVAL_S="0.5",
        GRADWATCH_FLUSH_EVERY="20",
        GRADWATCH_MAX_ATTEMPTS="1",
    )
    stack.start_api()
    return stack


def test_sigkilled_worker_its_run_fails_nothing_is_duplicated_and_redelivery_does_nothing(stack: Stack) -> None:
    client = stack.client
    worker = stack.start_worker("doomed-worker")
    experiment = client.submit(LONG_RUN)
    experiment_id = experiment["id"]
    stack.wait_for_step(experiment_id, 200, timeout=120)

    worker.kill(signal.SIGKILL)  # the parent and its pool child, without warning
    worker.popen.wait(timeout=10)
    killed_at = time.monotonic()

    # The API keeps serving while the run is orphaned.
    states = []
    while True:
        assert client.health() == {"status": "ok", "database": "ok", "broker": "ok", "message": ""}
        current = client.get(experiment_id)
        states.append(current["status"])
        if current["status"] != "running":
            break
        assert time.monotonic() - killed_at < STALE_S + 20, f"still running\n{stack.logs()}"
        time.sleep(0.2)
    failed_after_s = time.monotonic() - killed_at
    assert current["status"] == "failed", current
    assert "heartbeat" in current["error"], current["error"]
    assert states[0] == "running" and failed_after_s >= STALE_S - 1.0
    assert client.list(status="failed")["total"] >= 1

    # Everything stored before the kill is kept, each point once.
    (loss,) = client.series(experiment_id, "loss")["series"]
    assert len(loss["steps"]) >= 200
    assert loss["steps"] == list(range(len(loss["steps"])))
    stored, distinct = stack.stored_points(experiment_id)
    assert stored == distinct > 0

    # A new worker gets the message the dead one never acknowledged, and does nothing.
    rescuer = stack.start_worker("rescuer", app="tests.e2e.fast_redelivery")
    deadline = time.monotonic() + 60
    pattern = re.compile(r"Task gradwatch\.train\[[^\]]+\] succeeded in [0-9.]+s: 'skipped'")
    while not pattern.search(rescuer.log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"no redelivery seen\n{rescuer.tail()}"
        time.sleep(0.5)
    assert f"experiment {experiment_id} is not queued" in rescuer.log.read_text(errors="replace")
    after = client.get(experiment_id)
    assert after["status"] == "failed" and after["finished_at"] == current["finished_at"]
    assert stack.stored_points(experiment_id) == (stored, distinct)
