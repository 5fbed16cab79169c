"""What every benchmark needs: a scratch PostgreSQL database, the API under uvicorn on a
free port, the MLflow side in its own interpreter, and the figures printed the same way.

The benchmarks are scripts, not tests: they use the real services the product uses
(PostgreSQL, Redis, uvicorn, Celery worker processes) and print what they measure.

Environment:
- `GRADWATCH_BENCH_POSTGRES_URL` (default postgresql+psycopg://root@127.0.0.1:5432/test):
  a server where the benchmarks may CREATE and DROP `bench_*` databases;
- `GRADWATCH_BENCH_REDIS_URL` (default redis://127.0.0.1:6379/<15>): the broker of the
  load and scale-out benchmarks (a database number of its own, flushed before use);
- `GRADWATCH_BENCH_MLFLOW_PYTHON`: the interpreter that has MLflow (default: this one if
  it imports mlflow, else `.venv-bench/bin/python`; MLflow pins an older pyarrow than
  gradwatch, so it lives in a virtual environment of its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("GRADWATCH_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GRADWATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
MLFLOW_ARM = Path(__file__).resolve().parent / "mlflow_arm.py"


def machine() -> str:
    """One line naming what the numbers were measured on."""
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs{load}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- databases ---------------------------------------------------------------------------


def database_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_database(prefix: str = "bench", migrate: bool = True) -> Iterator[str]:
    """A fresh PostgreSQL database `bench_<prefix>_<random>` (with gradwatch's schema when
    `migrate`), dropped afterwards whatever happens."""
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        admin.dispose()
        raise SystemExit(
            f"cannot create a scratch database on {make_url(POSTGRES_URL).render_as_string()}: {error}\n"
            "start PostgreSQL or point GRADWATCH_BENCH_POSTGRES_URL at a server where this user may CREATE DATABASE"
        ) from None
    url = database_url(name)
    try:
        if migrate:
            from service.db.migrate import upgrade

            upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def flush_redis(url: str = REDIS_URL) -> None:
    """Empty the benchmark's Redis database (a queue left over from an interrupted run)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.ConnectionError as error:
        raise SystemExit(f"Redis at {url} does not answer ({error}): start it or set GRADWATCH_BENCH_REDIS_URL") from None
    finally:
        client.close()


# -- authentication ----------------------------------------------------------------------

BENCH_OWNER = "bench"


def bench_headers(database_url: str, owner: str = BENCH_OWNER, scope: str = "write") -> dict[str, str]:
    """A fresh token in the benchmark's database, as the `Authorization` header to send:
    every route but /health needs one. The benchmarks store their experiments as BENCH_OWNER."""
    from service.auth.tokens import issue_token
    from service.db.engine import one_off_session

    with one_off_session(database_url) as session:
        return {"Authorization": f"Bearer {issue_token(session, owner, scope, 'bench')}"}


# -- processes ---------------------------------------------------------------------------


def service_env(database: str, broker: str = "", home: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of an API or worker process for this benchmark."""
    env = {
        **os.environ,
        "GRADWATCH_DATABASE_URL": database,
        "GRADWATCH_BROKER_URL": broker,
        "GRADWATCH_HOME": home or tempfile.mkdtemp(prefix="gradwatch-bench-"),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:<port>
    pid: int


@contextlib.contextmanager
def api_server(
    env: dict[str, str], log: Path | None = None, ready_path: str = "/openapi.json", workers: int = 1,
    checkout: Path | None = None,
) -> Iterator[Server]:  # fmt: skip
    """`uvicorn service.api.main:app` on a free port, as production serves it (`workers`
    processes, one by default), once `ready_path` answers 200. `checkout`: serve the
    gradwatch of another working tree (a baseline to compare with) instead of this one."""
    port = free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    if checkout is not None:
        env = {**env, "PYTHONPATH": str(checkout)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.api.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--no-access-log", "--workers", str(workers)],
        env=env, cwd=checkout or REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        # Generous: on a shared 2-core machine at load 15-20 the API took 30 s to start.
        wait_http(base + ready_path, server, timeout_s=180)
        yield Server(base, server.pid)
    finally:
        stop(server)
        if log:
            out.close()  # type: ignore[union-attr]


def wait_http(url: str, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server for {url} exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer within {timeout_s:g} s")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """SIGTERM, then SIGKILL after `grace_s`: only the process this benchmark started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- MLflow, in the interpreter that has it -----------------------------------------------


def mlflow_python() -> str:
    configured = os.environ.get("GRADWATCH_BENCH_MLFLOW_PYTHON")
    if configured:
        return configured
    with contextlib.suppress(ImportError):
        import mlflow  # noqa: F401

        return sys.executable
    candidate = REPO_ROOT / ".venv-bench" / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    raise SystemExit(
        "MLflow is not installed. It pins an older pyarrow than gradwatch, so install it in a virtual "
        "environment of its own:\n  python3 -m venv .venv-bench && .venv-bench/bin/pip install mlflow 'psycopg[binary]'\n"
        "(or set GRADWATCH_BENCH_MLFLOW_PYTHON to an interpreter that imports mlflow)"
    )


def mlflow_call(command: str, payload: dict, timeout_s: float = 3600) -> dict:
    """Run one command of `bench/mlflow_arm.py` under MLflow's interpreter; its answer is
    the JSON object on the last line of its output."""
    result = subprocess.run(
        [mlflow_python(), str(MLFLOW_ARM), command, json.dumps(payload)],
        capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT,
        env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "GIT_PYTHON_REFRESH": "quiet"},
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"mlflow_arm {command} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(lines[-1])


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str) -> Iterator[str]:
    """`mlflow server` (its tracking server, one gunicorn/uvicorn worker) on a free port."""
    python = Path(mlflow_python())
    port = free_port()
    artifacts = tempfile.mkdtemp(prefix="mlflow-bench-artifacts-")
    mlflow_cli = python.parent / "mlflow"
    command = [str(mlflow_cli)] if mlflow_cli.exists() else [str(python), "-m", "mlflow"]
    server = subprocess.Popen(
        [*command, "server", "--backend-store-uri", backend_store_uri, "--default-artifact-root", artifacts,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "GIT_PYTHON_REFRESH": "quiet"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health", server, timeout_s=120)
        yield base
    finally:
        stop(server)
        shutil.rmtree(artifacts, ignore_errors=True)


# -- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def __str__(self) -> str:
        return f"n={self.n:<4} p50 {self.p50_ms:8.1f} ms  p95 {self.p95_ms:8.1f} ms  max {self.max_ms:8.1f} ms"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil(q/100 · n)
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency(timings_ms: Sequence[float]) -> Latency:
    ordered = sorted(timings_ms)
    return Latency(len(ordered), statistics.median(ordered), percentile(ordered, 95), percentile(ordered, 99), ordered[-1])


def ratio_line(name: str, ratio: float, goal: float | None = None, unit: str = "x") -> str:
    """The last line of every benchmark, which `run_all` collects."""
    verdict = ""
    if goal is not None:
        verdict = f" (goal >= {goal:g}{unit}: {'MET' if ratio >= goal else 'MISSED'})"
    return f"RATIO {name} = {ratio:.2f}{unit}{verdict}"


def py_spy() -> str | None:
    """py-spy, from PATH or MLflow's environment (`pip install py-spy` there), if present."""
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(mlflow_python()).parent / "py-spy" if (REPO_ROOT / ".venv-bench").exists() else None
    return str(candidate) if candidate and candidate.exists() else None


@contextlib.contextmanager
def profile(pid: int, seconds: float, top: int = 25) -> Iterator[None]:
    """Sample process `pid` with py-spy for `seconds` while the block runs, then print the
    functions where it spent its time (inclusive, then self). Does nothing without py-spy."""
    spy = py_spy()
    if spy is None:
        print("   (no py-spy: install it to profile the server)")
        yield
        return
    raw = Path(tempfile.mkdtemp(prefix="gradwatch-bench-prof-")) / "profile.raw"
    recorder = subprocess.Popen(
        [spy, "record", "--format", "raw", "--rate", "100", "--duration", str(max(1, int(seconds))),
         "--output", str(raw), "--pid", str(pid), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        try:
            recorder.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            recorder.kill()
        if raw.exists():
            print_profile(raw, top)
        shutil.rmtree(raw.parent, ignore_errors=True)


def print_profile(raw: Path, top: int) -> None:
    total, inclusive, own = 0, Counter[str](), Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    print(f"   py-spy profile of the server, {total} samples (active threads):")
    for label, counter in (("inclusive", inclusive), ("self", own)):
        for frame, count in counter.most_common(top):
            print(f"     {label:<9} {100 * count / max(total, 1):5.1f}%  {frame[:140]}")


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   machine: {machine()}")
