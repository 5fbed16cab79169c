"""The compose deployment under test, driven the way an operator drives it: the
`docker-compose` and `docker` commands on the real docker-compose.yml (project, images and
secrets from the env file tests/compose/run.sh writes), and HTTP to the ports compose
publishes on 127.0.0.1, never a container's own address."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service.client import GradwatchClient, GradwatchError
from tests.conftest import REPO_ROOT
from tests.e2e.stack import Stack

STARTUP_TIMEOUT_S = 240.0
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Run inside the api container, for each experiment id given: [points as stored, distinct
# (series, step) pairs], read from the chunks themselves (the API de-duplicates on read).
STORED_POINTS = """
import json, sys, sqlalchemy as sa
from service.config import Settings
from service.store.codec import decode_steps
engine = sa.create_engine(Settings().resolved_database_url)
counts = {}
with engine.connect() as connection:
    for experiment_id in sys.argv[1:]:
        rows = connection.execute(sa.text(
            "SELECT c.series_id, c.steps FROM point_chunks c JOIN series s ON s.id = c.series_id "
            "WHERE s.experiment_id = :id"), {"id": experiment_id}).all()
        pairs = [(series_id, int(step)) for series_id, steps in rows for step in decode_steps(steps)]
        counts[experiment_id] = [len(pairs), len(set(pairs))]
print(json.dumps(counts))
"""


def parse_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@dataclass
class ComposeStack(Stack):
    """A Stack (so that the end-to-end scenarios run on it unchanged) whose processes are
    compose services."""

    env_file: Path = Path()
    project: str = ""
    flower_url: str = ""
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> ComposeStack:
        env_file = Path(os.environ["GRADWATCH_COMPOSE_ENV_FILE"])
        return cls(
            database_url="", broker_url="", home=env_file.parent, data_dir=Path(os.environ["GRADWATCH_COMPOSE_DATA_DIR"]),
            env_file=env_file, project=os.environ["COMPOSE_PROJECT_NAME"], api_url=os.environ["GRADWATCH_COMPOSE_API_URL"],
            flower_url=os.environ["GRADWATCH_COMPOSE_FLOWER_URL"], settings=parse_env_file(env_file),
        )  # fmt: skip

    # -- the commands an operator types ---------------------------------------------------

    def compose(self, *arguments: str, timeout: float = 300, check: bool = True) -> str:
        command = ["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file), *arguments]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(arguments)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def docker(self, *arguments: str, timeout: float = 120) -> str:
        done = subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            pytest.fail(f"docker {' '.join(arguments)}: exit {done.returncode}\n{done.stderr}")
        return done.stdout

    def containers(self, service: str) -> list[str]:
        """The running containers of a service, by name."""
        ids = self.compose("ps", "-q", service).split()
        names = [self.docker("inspect", "--format", "{{.Name}} {{.State.Running}}", i).split() for i in ids]
        return [name.lstrip("/") for name, running in names if running == "true"]

    def up(self, workers: int = 1) -> None:
        """Everything in order (compose waits on the health checks and the migrate step), the
        datasets volume filled from the host's MNIST first, a write token for the tests."""
        if not self.token:
            self.compose(
                "run", "--rm", "--no-deps", "-T", "-v", f"{self.data_dir / 'mnist'}:/source:ro", "--entrypoint", "sh",
                "worker", "-c", "mkdir -p /datasets/mnist && cp /source/* /datasets/mnist/",
            )  # fmt: skip
        self.compose("--profile", "monitoring", "up", "-d", "--scale", f"worker={workers}", timeout=STARTUP_TIMEOUT_S)
        if not self.token:
            created = self.compose("exec", "-T", "api", "gradwatch", "token", "create", "--owner", "compose", "--scope", "write")
            self.token = created.strip().splitlines()[-1]
        self.wait_healthy()

    def wait_healthy(self) -> None:
        if self.client is None:
            self.client = GradwatchClient(self.api_url, timeout=30, token=self.token, retry_for=0)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                if self.client.health()["status"] == "ok":
                    return
            except GradwatchError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the composed API did not become healthy\n{self.logs()}")
            time.sleep(0.5)

    def worker_running(self, experiment_id: str) -> str:
        """The worker container whose log says it is training this experiment (last claim)."""
        pattern = re.compile(rf"training experiment {experiment_id} ")
        found = []
        for name in self.containers("worker"):
            log = subprocess.run(["docker", "logs", "--timestamps", name], capture_output=True, text=True, check=False)
            for line in (log.stdout + log.stderr).splitlines():
                if pattern.search(line):
                    found.append((line.split()[0], name))
        if not found:
            pytest.fail(f"no worker claimed {experiment_id}\n{self.logs()}")
        return max(found)[1]

    def flower(self, auth: tuple[str, str] | None) -> httpx.Response:
        return httpx.get(f"{self.flower_url}/api/workers", auth=auth, timeout=30)

    # -- what HTTP cannot show ------------------------------------------------------------

    def stored_points(self, experiment_id: str) -> tuple[int, int]:
        """(points as stored, distinct (series, step) pairs): equal when none is stored twice."""
        return self.stored_points_of([experiment_id])[experiment_id]

    def stored_points_of(self, experiment_ids: list[str]) -> dict[str, tuple[int, int]]:
        output = self.compose("exec", "-T", "api", "python", "-c", STORED_POINTS, *experiment_ids)
        return {key: (stored, distinct) for key, (stored, distinct) in json.loads(output).items()}

    def logs(self) -> str:
        done = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file), "logs", "--no-color", "--tail", "40"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return done.stdout[-12000:]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
