"""Database outages ridden out by the workers: PostgreSQL stopped for 60 s mid-run (a
cluster of the test's own), and the embedded SQLite file locked by another process for
60 s. Two workers train at once: one with the default tolerance (and a small buffer, so
that training pauses at its bound), whose run must end `succeeded` with every step
stored exactly once; one with a tolerance below the outage, whose run must end `failed`
with the database as the stated cause. The reaper (heartbeats 10 s stale after 10 s)
must not end the live run when the database comes back."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.client import GradwatchError
from service.db.migrate import upgrade
from tests.conftest import redis_database
from tests.e2e.pg_cluster import PostgresCluster
from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow

OUTAGE_S = 60.0
STEPS = 6000
RUN = {
    "name": "through-an-outage",
    "model": {"type": "mlp", "hidden_sizes": [32]},
    "dataset": {"name": "digits"},
    "training": {"steps": STEPS, "batch_size": 32, "seed": 0},
}
ENV = {
    "GRADWATCH_HEARTBEAT_STALE_S": "10",
    "GRADWATCH_REAPER_INTERVAL_S": "0.5",
    "GRADWATCH_DB_RETRY_MAX_BACKOFF_S": "3",
    "GRADWATCH_FLUSH_EVERY": "10",
}
TOLERANT = {"GRADWATCH_WRITER_MAX_BUFFER_BYTES": str(128 * 1024)}  # default tolerance: 600 s
IMPATIENT = {"GRADWATCH_DB_OUTAGE_TOLERANCE_S": "10"}


def _worker_of(stack: Stack, experiment_id: str) -> str:
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT worker FROM experiments WHERE id = :id"), {"id": experiment_id}).scalar_one()
    finally:
        engine.dispose()


def ride_out(stack: Stack, outage: Callable[[], None]) -> None:
    stack.start_api()
    tolerant = stack.start_worker("tolerant", **TOLERANT)
    stack.start_worker("impatient", **IMPATIENT)
    client = stack.client
    runs = [client.submit({**RUN, "name": f"outage-{i}"})["id"] for i in range(2)]
    for experiment_id in runs:
        stack.wait_for_step(experiment_id, 100, timeout=180)
    by_worker = {_worker_of(stack, experiment_id).split("-")[0]: experiment_id for experiment_id in runs}
    assert set(by_worker) == {"tolerant", "impatient"}, by_worker  # one run each, at once

    outage()  # returns when the database is back
    back_at = time.monotonic()

    def progress() -> int | None:
        try:
            return client.get(by_worker["tolerant"])["progress"]["step"]
        except GradwatchError:  # the API's own pool reconnecting (its 503 is not tested here)
            return None

    while (stalled_at := progress()) is None:
        time.sleep(0.1)
    while progress() in (stalled_at, None):
        assert time.monotonic() - back_at < 120, stack.logs()
        time.sleep(0.1)
    print(f"the surviving run's stored progress moved {time.monotonic() - back_at:.1f} s after the database came back")

    survived = stack.wait(by_worker["tolerant"], timeout=600)
    assert survived["status"] == "succeeded", f"{survived}\n{stack.logs()}"
    assert survived["progress"] == {"step": STEPS, "total": STEPS}
    (loss,) = client.series(survived["id"], "loss")["series"]
    assert loss["steps"] == list(range(STEPS))  # no gap
    stored, distinct = stack.stored_points(survived["id"])
    assert stored == distinct > 0  # none twice
    assert "training waits for it" in tolerant.log.read_text(errors="replace")  # the buffer's bound held

    gave_up = stack.wait(by_worker["impatient"], timeout=300)
    assert gave_up["status"] == "failed", gave_up
    assert gave_up["error"].startswith("database unreachable for "), gave_up["error"]
    assert "GRADWATCH_DB_OUTAGE_TOLERANCE_S = 10 s" in gave_up["error"]
    # The worker's own verdict, not the reaper's "worker lost: no heartbeat …" (the write that
    # found the database gone may itself be the heartbeat, so that word alone proves nothing).
    assert "worker lost" not in gave_up["error"], gave_up["error"]
    (partial,) = client.series(gave_up["id"], "loss")["series"]
    assert partial["steps"] == list(range(len(partial["steps"]))) and len(partial["steps"]) >= 100


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def test_postgresql_stopped_for_60_s_mid_run(cluster: PostgresCluster, mnist_data_dir: Path, tmp_path: Path) -> None:
    admin = sa.create_engine(cluster.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text("CREATE DATABASE gradwatch"))
    admin.dispose()
    database_url = cluster.url.rsplit("/", 1)[0] + "/gradwatch"
    upgrade(database_url)
    stack = Stack(database_url, redis_database(12), tmp_path / "home", mnist_data_dir, dict(ENV))
    stack.home.mkdir()

    def outage() -> None:
        cluster.stop()
        time.sleep(OUTAGE_S)
        cluster.start()

    try:
        ride_out(stack, outage)
    finally:
        print(stack.logs())
        stack.stop()


def test_sqlite_locked_by_another_process_for_60_s_mid_run(embedded_stack: Stack) -> None:
    stack = embedded_stack
    stack.extra_env.update(ENV)
    database = stack.database_url.removeprefix("sqlite:///")

    def outage() -> None:
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
             "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(float(sys.argv[2])); c.execute('COMMIT')",
             database, str(OUTAGE_S)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        with holder:
            assert holder.stdout.readline() == b"locked\n"
            assert holder.wait(timeout=OUTAGE_S + 60) == 0

    ride_out(stack, outage)
