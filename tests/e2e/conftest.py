"""A real gradwatch, process by process: the API (`python -m service.cli api`, uvicorn on a
free port) and Celery workers (`celery -A workers.celery_app worker`), on PostgreSQL +
Redis or on SQLite + kombu's filesystem broker. Tests talk to it by HTTP only, through
`service.client`, and look into the database only to prove what HTTP cannot show (that
no point is stored twice). Every process gets a session of its own and its whole process
group is killed at teardown. Never Celery's eager mode: that proves nothing about the queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from service.db.migrate import upgrade
from tests.conftest import redis_database
from tests.e2e.stack import Stack


def _postgres_database(server_url: str) -> tuple[str, sa.Engine, str]:
    name = f"gradwatch_e2e_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False), admin, name


@pytest.fixture(scope="module")
def make_pg_redis_stack(postgres_server_url: str, mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Builds stacks on a fresh PostgreSQL database and an emptied Redis database each.

    Module-scoped, so that the heavy scenarios share one API and one worker instead of
    paying for their start-up once per test."""
    stacks: list[tuple[Stack, sa.Engine, str]] = []
    redis_numbers = iter(range(11, 0, -1))

    def build(**extra_env: str) -> Stack:
        database_url, admin, name = _postgres_database(postgres_server_url)
        home = tmp_path_factory.mktemp("gradwatch-home")
        stack = Stack(database_url, redis_database(next(redis_numbers)), home, mnist_data_dir, extra_env)
        stacks.append((stack, admin, name))
        upgrade(database_url)
        return stack

    yield build
    import redis

    for stack, admin, name in stacks:
        print(stack.logs())  # shown by pytest when a test failed
        stack.stop()
        with redis.Redis.from_url(stack.broker_url) as broker:
            broker.flushdb()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def embedded_stack(mnist_data_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    """The embedded default: a SQLite file and kombu's filesystem broker, no server."""
    home = tmp_path / "home"
    home.mkdir()
    stack = Stack(f"sqlite:///{home / 'gradwatch.db'}", "", home, mnist_data_dir)
    upgrade(stack.database_url)
    try:
        yield stack
    finally:
        print(stack.logs())
        stack.stop()
