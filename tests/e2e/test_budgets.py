"""Budgets enforced by a real worker: the wall-clock limit and the out-of-memory guard.

One API and one Celery worker process (prefork, concurrency 1) on PostgreSQL + Redis. The
worker may add only 1 GiB of address space per run (GRADWATCH_WORKER_MEMORY_CAP_BYTES),
far below the default memory budget, so that a spec the API accepts can still run out of
memory on it: the run must end `failed` with "out of memory" and its estimate, and the
same pool process must then train the next experiment.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from service.budgets import estimate_spec_memory, format_bytes
from service.schemas.spec import ExperimentSpec
from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow

CAP_BYTES = 2**30


@pytest.fixture(scope="module")
def stack(make_pg_redis_stack) -> Stack:
    stack = make_pg_redis_stack(GRADWATCH_WORKER_POLL_S="0.1", GRADWATCH_WORKER_MEMORY_CAP_BYTES=str(CAP_BYTES))
    stack.start_api()
    stack.start_worker()
    return stack


def small_spec(name: str, **training: object) -> dict:
    return {
        "name": name,
        "model": {"type": "mlp", "hidden_sizes": [16, 16], "activation": "tanh"},
        "dataset": {"name": "digits"},
        "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "seed": 0, **training},
    }


def worker_of(stack: Stack, experiment_id: str) -> str:
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text("SELECT worker FROM experiments WHERE id = :id"), {"id": experiment_id}
            ).scalar_one()
    finally:
        engine.dispose()


def test_a_run_reaching_max_runtime_s_ends_timed_out_with_its_points(stack: Stack) -> None:
    assert stack.client is not None
    spec = small_spec("timed-out", steps=1_000_000, max_runtime_s=5)
    spec["logging"] = {"every": 100}
    submitted = stack.client.submit(spec)
    assert submitted["spec"]["training"]["max_runtime_s"] == 5
    final = stack.wait(submitted["id"], timeout=120)
    assert final["status"] == "timed_out", final
    assert "max_runtime_s = 5 s" in final["error"]
    done = final["result"]["steps_done"]
    assert 0 < done < 1_000_000
    stored, distinct = stack.stored_points(submitted["id"])
    assert stored == distinct > 0
    # Every 100th step was recorded, up to the last one trained: nothing was dropped.
    [loss] = stack.client.series(submitted["id"], "loss")["series"]
    assert loss["steps"][0] == 0 and done - 100 <= loss["steps"][-1] < done


def test_a_run_out_of_memory_fails_and_the_worker_trains_the_next(stack: Stack) -> None:
    assert stack.client is not None
    # ~154M parameters: the engine's flat buffers alone want 3.7 GB, under the default
    # budget of 8 GiB but far over the 1 GiB this worker lets a run add.
    hungry = {
        "name": "hungry",
        "model": {"type": "mlp", "hidden_sizes": [4096] * 10},
        "dataset": {"name": "mnist", "split": "test"},
        "training": {"steps": 5},
    }
    estimate = estimate_spec_memory(ExperimentSpec.model_validate(hungry).model_dump(mode="json")).total
    assert CAP_BYTES < estimate < 8 * 2**30  # passes the default budget, not this worker
    first = stack.client.submit(hungry)
    failed = stack.wait(first["id"], timeout=300)
    assert failed["status"] == "failed", failed
    assert failed["error"].startswith("out of memory"), failed["error"]
    assert f"its estimate was {format_bytes(estimate)}" in failed["error"]
    assert "GRADWATCH_WORKER_MEMORY_CAP_BYTES" in failed["error"]

    second = stack.client.submit(small_spec("after-oom", steps=20))
    done = stack.wait(second["id"], timeout=120)
    assert done["status"] == "succeeded", done
    # The same pool process (same pid) trained both: the guard kept it alive.
    assert worker_of(stack, second["id"]) == worker_of(stack, first["id"])
    worker = stack.processes[-1]
    assert worker.popen.poll() is None
    assert "WorkerLostError" not in worker.log.read_text(errors="replace")
