"""Runs that resume where they stopped, on PostgreSQL + Redis with two Celery workers.

A worker SIGKILLed mid-run: the API's reaper finds the run silent, queues it again, and
the other worker resumes it from its last checkpoint (stored in the database); a worker
sent SIGTERM (a warm shutdown: `docker compose stop`, a scale-down) checkpoints at the
next step and hands the run back at once, without waiting for the reaper. Either way
the run succeeds, each of its points is stored once, its loss and grad_norm series are
bit-identical to an uninterrupted twin's (CPU, same seed), and its attempts are listed
by `GET /experiments/{id}`.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.stack import Process, Stack

pytestmark = pytest.mark.slow

STALE_S = 10.0
STEPS = 1_000
RUN = {
    "model": {"type": "mlp", "hidden_sizes": [32, 32]},
    "dataset": {"name": "digits"},
    "training": {"steps": STEPS, "batch_size": 32, "optimizer": "momentum", "lr": 0.02, "seed": 5},
    "logging": {"checkpoint_every": 100},
}


@pytest.fixture(scope="module")
def stack(make_pg_redis_stack) -> Stack:
    stack = make_pg_redis_stack(
        GRADWATCH_HEARTBEAT_STALE_S=str(STALE_S),
        GRADWATCH_REAPER_INTERVAL_S="0.5",
        GRADWATCH_FLUSH_EVERY="20",
        # The plain row statistics only, in every worker: see check_resumed.
        GRADWATCH_WORKER_COMPILE_PROBES="false",
    )
    stack.start_api()
    return stack


@pytest.fixture(scope="module")
def twin(stack: Stack) -> dict:
    """The uninterrupted run every resumed one must match, trained on a worker of its own."""
    worker = stack.start_worker("twin-worker")
    experiment = stack.client.submit({**RUN, "name": "twin"})
    finished = stack.wait(experiment["id"], timeout=300)
    assert finished["status"] == "succeeded", finished
    worker.kill(signal.SIGKILL)
    worker.popen.wait(timeout=10)
    return {"id": experiment["id"], "series": measured(stack, experiment["id"])}


def measured(stack: Stack, experiment_id: str) -> dict:
    client = stack.client
    series = {("loss", None): client.series(experiment_id, "loss", max_points=None)["series"][0]}
    for item in client.series(experiment_id, "grad_norm", max_points=None)["series"]:
        series[("grad_norm", item["layer"])] = item
    return {key: (item["steps"], item["values"]) for key, item in series.items()}


def running_on(stack: Stack, experiment_id: str, workers: list[Process], past_step: int) -> Process:
    """The worker process whose attempt is training the experiment, once past `past_step`."""
    stack.wait_for_step(experiment_id, past_step, timeout=180)
    attempt = stack.client.get(experiment_id)["attempts"][-1]
    (worker,) = [w for w in workers if attempt["worker"].startswith(w.name + "-")]
    return worker


def check_resumed(stack: Stack, twin: dict, experiment_id: str, ending: str) -> list[dict]:
    finished = stack.wait(experiment_id, timeout=300)
    assert finished["status"] == "succeeded", finished
    assert finished["progress"] == {"step": STEPS, "total": STEPS}
    # Bit-identical to the twin, every series (JSON carries every float64 exactly): the
    # training resumed exactly, and every float32 statistic was reduced the same way. (These
    # workers never compile the row statistics: the compiled kernel rounds a row sum one ulp
    # away from the plain one, and a twin measured by a warmed worker would differ there.)
    series = measured(stack, experiment_id)
    assert series.keys() == twin["series"].keys()
    for key, (steps, values) in series.items():
        assert steps == list(range(STEPS)), key
        assert values == twin["series"][key][1], key
    stored, distinct = stack.stored_points(experiment_id)
    assert stored == distinct > 0  # recomputed steps stored once
    attempts = finished["attempts"]
    assert [a["ending"] for a in attempts] == [ending, "finished"], attempts
    first, second = attempts
    assert first["worker"] != second["worker"] and first["resumed_from_step"] is None
    assert second["resumed_from_step"] is not None and second["resumed_from_step"] > 0
    assert second["why"] == "succeeded"
    return attempts


def test_a_sigkilled_worker_s_run_resumes_on_the_other_from_its_checkpoint(stack: Stack, twin: dict) -> None:
    workers = [stack.start_worker("first"), stack.start_worker("second")]
    experiment = stack.client.submit({**RUN, "name": "killed"})
    victim = running_on(stack, experiment["id"], workers, 350)
    victim.kill(signal.SIGKILL)  # the worker and its pool child, without warning
    victim.popen.wait(timeout=10)
    killed_at = time.monotonic()
    while len(stack.client.get(experiment["id"])["attempts"]) < 2:  # the reaper requeued it and a worker claimed it
        assert stack.client.health()["status"] == "ok"
        assert time.monotonic() - killed_at < STALE_S + 60, stack.logs()
        time.sleep(0.25)
    attempts = check_resumed(stack, twin, experiment["id"], "lost")
    assert "no heartbeat" in attempts[0]["why"]
    assert attempts[1]["resumed_from_step"] % 100 == 0 and attempts[1]["resumed_from_step"] >= 300
    survivor = next(w for w in workers if w is not victim)
    survivor.kill(signal.SIGKILL)
    survivor.popen.wait(timeout=10)


def test_a_sigterm_hands_the_run_back_at_once_and_the_other_worker_resumes_it(stack: Stack, twin: dict) -> None:
    workers = [stack.start_worker("third"), stack.start_worker("fourth")]
    experiment = stack.client.submit({**RUN, "name": "terminated"})
    leaving = running_on(stack, experiment["id"], workers, 250)
    leaving.popen.send_signal(signal.SIGTERM)  # the main process only, as `docker compose stop` does
    sent_at = time.monotonic()
    while len(stack.client.get(experiment["id"])["attempts"]) < 2:
        assert time.monotonic() - sent_at < STALE_S, f"not resumed before the reaper could have\n{stack.logs()}"
        time.sleep(0.1)
    resumed_after_s = time.monotonic() - sent_at
    assert leaving.popen.wait(timeout=30) == 0  # a clean warm shutdown
    attempts = check_resumed(stack, twin, experiment["id"], "handed_back")
    assert "worker shutting down" in attempts[0]["why"], attempts
    assert attempts[1]["resumed_from_step"] >= 250
    print(f"SIGTERM → resumed on the other worker after {resumed_after_s:.2f} s")
