"""Processes of a real gradwatch deployment for the end-to-end tests: the API
(`python -m service.cli api`, uvicorn on a free port) and Celery workers (`celery -A
workers.celery_app worker`), each in a process group of its own so that teardown (or a
test simulating a crash) can kill it whole."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.client import GradwatchClient, GradwatchError
from tests.conftest import REPO_ROOT

STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, characters: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (pid {self.popen.pid}, returncode {self.popen.poll()}) ---\n{text[-characters:]}"

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker's pool children included)."""
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass


@dataclass
class Stack:
    """One gradwatch deployment: a database, a broker, an API and its workers."""

    database_url: str
    broker_url: str
    home: Path
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    client: GradwatchClient | None = None
    api_url: str = ""
    token: str = ""  # a write token of `owner`, made by start_api; GRADWATCH_TOKEN of every process
    owner: str = "e2e"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
        env.update(
            GRADWATCH_DATABASE_URL=self.database_url,
            GRADWATCH_BROKER_URL=self.broker_url,
            GRADWATCH_HOME=str(self.home),
            GRADWATCH_DATA_DIR=str(self.data_dir),
            GRADWATCH_ALLOW_DOWNLOAD="false",
            # The suite shares a 2-core machine with itself: two spinning OpenMP threads
            # per process make the small models here several times slower.
            GRADWATCH_WORKER_TORCH_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        if self.token:
            env["GRADWATCH_TOKEN"] = self.token
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def spawn(self, name: str, argv: list[str], **env: str) -> Process:
        log = self.home / f"{name}.log"
        with log.open("wb") as output:
            popen = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=self.env(**env), stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one at teardown
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def make_token(self, owner: str | None = None, scope: str = "write") -> str:
        """A token in the stack's database, made as `gradwatch token create` makes one."""
        from service.auth.tokens import issue_token
        from service.db.engine import one_off_session

        with one_off_session(self.database_url) as session:
            return issue_token(session, owner or self.owner, scope, "e2e")

    def start_api(self, name: str = "api", **env: str) -> Process:
        self.token = self.token or self.make_token()
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        api = self.spawn(name, [sys.executable, "-m", "service.cli", "api", "--host", "127.0.0.1", "--port", str(port)], **env)
        # retry_for=0: the start-up loop below polls itself, and a test sees an error at once.
        self.client = GradwatchClient(self.api_url, timeout=30, token=self.token, retry_for=0)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                self.client.health()
                return api
            except GradwatchError:
                if api.popen.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the API did not become healthy\n{api.tail()}")
                time.sleep(0.2)

    def start_worker(self, name: str = "worker", app: str = "workers.celery_app", queues: str = "cpu", **env: str) -> Process:
        argv = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "--pool=prefork", "--concurrency=1", "-Q", queues, "--loglevel=INFO",
            f"--hostname={name}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
        ]
        worker = self.spawn(name, argv, **env)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while "ready." not in worker.log.read_text(errors="replace"):
            if worker.popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker did not start\n{worker.tail()}")
            time.sleep(0.2)
        return worker

    def wait(self, experiment_id: str, timeout: float) -> dict:
        assert self.client is not None
        try:
            return self.client.wait(experiment_id, timeout=timeout, poll=0.25)
        except TimeoutError as error:
            pytest.fail(f"{error}\n{self.logs()}")

    def wait_for_step(self, experiment_id: str, step: int, timeout: float) -> dict:
        """Poll until the experiment is running with progress past `step`."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while True:
            experiment = self.client.get(experiment_id)
            if experiment["status"] == "running" and (experiment["progress"] or {}).get("step", 0) >= step:
                return experiment
            if experiment["status"] not in ("queued", "running") or time.monotonic() > deadline:
                pytest.fail(f"expected {experiment_id} running past step {step}, got {experiment}\n{self.logs()}")
            time.sleep(0.1)

    def stored_points(self, experiment_id: str) -> tuple[int, int]:
        """(points as stored, distinct (series, step) pairs): equal when none is stored twice.

        Read from the chunks themselves, because the API de-duplicates on read."""
        from service.store.codec import decode_steps

        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    sa.text(
                        "SELECT c.series_id, c.steps FROM point_chunks c JOIN series s ON s.id = c.series_id "
                        "WHERE s.experiment_id = :id"
                    ),
                    {"id": experiment_id},
                ).all()
        finally:
            engine.dispose()
        pairs = [(series_id, int(step)) for series_id, steps in rows for step in decode_steps(steps)]
        return len(pairs), len(set(pairs))

    def logs(self) -> str:
        return "\n".join(process.tail() for process in self.processes)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for process in self.processes:
            process.kill(signal.SIGKILL)
        for process in self.processes:
            try:
                process.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
