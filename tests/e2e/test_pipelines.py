"""Lab pipelines end to end on PostgreSQL + Redis, by HTTP alone: callbacks for runs a
real Celery worker ends, received by a real HTTP server on 127.0.0.1 that first answers
500; a sweep announced once at its end; and the client riding out an API process
stopped (SIGSTOP) for 10 s in the middle of a submit.

One API and one worker (prefork, concurrency 1) serve the module.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.client import GradwatchClient
from tests.callback_receiver import Receiver
from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow

TINY = {
    "name": "pipeline-mlp",
    "tags": ["pipeline"],
    "model": {"type": "mlp", "hidden_sizes": [16], "activation": "tanh"},
    "dataset": {"name": "digits", "limit": 500},
    "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "steps": 20, "seed": 0},
}
# Weights N(0, 1) through three ReLU layers and a huge step: non-finite within a few steps.
DIVERGING = TINY | {
    "name": "pipeline-diverging",
    "model": {"type": "mlp", "hidden_sizes": [64, 64, 64], "activation": "relu", "init": {"scheme": "normal", "std": 1.0}},
    "training": {"optimizer": "sgd", "lr": 100.0, "batch_size": 32, "steps": 200, "seed": 0},
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(fail_first=1)
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def stack(make_pg_redis_stack) -> Stack:
    stack = make_pg_redis_stack(
        GRADWATCH_WORKER_POLL_S="0.1", GRADWATCH_CALLBACK_POLL_S="0.2", GRADWATCH_CALLBACK_RETRY_INITIAL_S="0.2"
    )
    stack.start_api()
    stack.start_worker()
    return stack


def delivered(stack: Stack, read, timeout: float = 60.0) -> dict:
    """The one callback `read()` lists, once it is delivered."""
    deadline = time.monotonic() + timeout
    while True:
        [callback] = read()["items"]
        if callback["state"] == "delivered":
            return callback
        if callback["state"] in ("failed", "skipped") or time.monotonic() > deadline:
            pytest.fail(f"callback not delivered: {callback}\n{stack.logs()}")
        time.sleep(0.2)


def test_each_ended_run_gets_exactly_one_signed_event(stack: Stack, receiver: Receiver) -> None:
    client = stack.client
    assert client is not None
    notify = {"notify": {"url": receiver.url}}
    succeeded = client.submit(TINY | notify)
    diverged = client.submit(DIVERGING | notify)
    cancelled = client.submit(TINY | {"name": "pipeline-cancelled"} | notify)
    client.cancel(cancelled["id"])  # still queued behind the others: it ends at once
    sweep = client.submit_sweep(TINY, {"training.seed": [0, 1]}, name="pipeline-sweep", notify=notify["notify"])
    runs = [succeeded, diverged, cancelled]
    members = [member["id"] for member in sweep["members"]]
    finished = {run["id"]: stack.wait(run["id"], timeout=240) for run in runs}
    finished |= {member: stack.wait(member, timeout=240) for member in members}
    assert [finished[run["id"]]["status"] for run in runs] == ["succeeded", "diverged", "cancelled"]

    callbacks = {run["id"]: delivered(stack, lambda run=run: client.deliveries(run["id"])) for run in runs}
    sweep_callback = delivered(stack, lambda: client.sweep_deliveries(sweep["id"]))
    time.sleep(1.0)  # several more passes of the delivery loop: none may send anything again
    secret = client.callback_secret()

    accepted = receiver.accepted()
    events = {r.event["id"]: r for r in accepted}
    assert len(accepted) == len(events) == 4  # one event per ended run, and one for the sweep
    assert Counter(r.event["id"] for r in receiver.received) == {event_id: 2 for event_id in events}  # 500, then 200
    for received in receiver.received:
        assert received.verified(secret, tolerance_s=120)  # the HMAC, and a timestamp within two minutes
        assert not received.verified(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    for run in runs:
        callback = callbacks[run["id"]]
        event = events[callback["event_id"]].event
        assert event["experiment"]["id"] == run["id"]
        assert event["experiment"]["status"] == finished[run["id"]]["status"]
        assert [a["status_code"] for a in callback["attempts"]] == [500, 200]
    assert events[callbacks[diverged["id"]]["event_id"]].event["experiment"]["result"]["diverged_at_step"] is not None
    assert events[callbacks[succeeded["id"]]["event_id"]].event["summary"]["verdict"] in ("healthy", "vanishing", "not_learning")

    sweep_event = events[sweep_callback["event_id"]].event
    assert sweep_event["type"] == "sweep.ended" and sweep_event["sweep"]["status_counts"] == {"succeeded": 2}
    last_member_end = max(finished[member]["finished_at"] for member in members)
    assert sweep_callback["triggered_at"] >= last_member_end  # announced only once both had ended


def test_the_client_rides_out_an_api_stopped_for_10_s_mid_submit(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    [api] = [process for process in stack.processes if process.name == "api"]
    spec = TINY | {"name": "pipeline-stopped-api"}
    with GradwatchClient(stack.api_url, timeout=2, token=stack.token, retry_for=90) as client:
        assert client.list(name="pipeline-stopped-api")["total"] == 0
        api.kill(signal.SIGSTOP)  # the process freezes: connections queue, nothing answers
        try:
            with caplog.at_level(logging.WARNING, logger="gradwatch.client"), ThreadPoolExecutor(1) as pool:
                submitting = pool.submit(client.submit, spec)
                time.sleep(10)
                assert not submitting.done()  # nothing could answer it
                api.kill(signal.SIGCONT)
                created = submitting.result(timeout=120)
        finally:
            api.kill(signal.SIGCONT)
        listed = client.list(name="pipeline-stopped-api")
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) >= 2, caplog.text  # its first tries timed out and were sent again
    assert listed["total"] == 1, listed
    assert listed["items"][0]["id"] == created["id"] and created["name"] == "pipeline-stopped-api"
