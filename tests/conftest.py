"""Fixtures shared by the whole suite: the real PostgreSQL, Redis and MNIST.

PostgreSQL and Redis run on the development and CI machines. Where one is missing the
tests that need it skip, unless GRADWATCH_TEST_REQUIRE_SERVICES=1 (set by `.ci/run`),
in which case they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Worker processes the tests start inherit this: compiling the probes' kernel in each of them
# would cost minutes of CPU per process (test_row_statistics.py compiles it once, on purpose).
os.environ.setdefault("GRADWATCH_WORKER_COMPILE_PROBES", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build (or load from the cache) the engine's C++ loops once, before any test, as a worker
    does at its start: a run on a CPU waits for the row statistics' loop at its start, and the
    first build on a fresh machine (20–40 s) must not eat into one test's time limits. The
    worker processes the tests start then load them from the same cache."""
    from workers.engine.histogram_native import KERNEL
    from workers.engine.row_statistics import NATIVE

    for kernel in (KERNEL, NATIVE):
        kernel.start()
    for kernel in (KERNEL, NATIVE):
        kernel.start().wait(900)
REQUIRE_SERVICES = os.environ.get("GRADWATCH_TEST_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get(
    "GRADWATCH_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("GRADWATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_missing(service: str, error: Exception) -> None:
    message = f"{service} is not reachable: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (GRADWATCH_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    """The folder holding `mnist/` with the real MNIST test set."""
    candidates = [os.environ.get("GRADWATCH_DATA_DIR"), str(REPO_ROOT.parent / "shared" / "data")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
            return Path(candidate)
    pytest.fail("the MNIST test set was not found: set GRADWATCH_DATA_DIR to the folder holding mnist/")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of the PostgreSQL server's maintenance database, after checking it answers."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        service_missing("PostgreSQL", error)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"gradwatch_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def redis_database(number: int) -> str:
    """The URL of Redis database `number`, emptied; skips or fails when Redis is down."""
    import redis

    url = REDIS_URL.rsplit("/", 1)[0] + f"/{number}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except Exception as error:  # noqa: BLE001
        service_missing("Redis", error)
    finally:
        client.close()
    return url


@pytest.fixture
def redis_url() -> str:
    """A Redis URL on a database number of its own (13), emptied before the test."""
    return redis_database(13)
