"""The `gradwatch` CLI against a real API (uvicorn in a thread, on a SQLite file and the
filesystem broker). No Celery worker runs here: a test thread plays the worker through
the store (claim, write chunks, finish), so `submit --wait` is followed to its end.
`gradwatch up` itself is tested end to end in tests/e2e/test_embedded.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from typer.testing import CliRunner

from service import store
from service.auth.tokens import issue_token
from service.cli import app
from service.config import Settings
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from tests.e2e.stack import free_port

runner = CliRunner()
SPEC = {"name": "cli-digits", "tags": ["cli"], "model": {"type": "mlp", "hidden_sizes": [16]},
        "dataset": {"name": "digits"}, "training": {"steps": 40}}


class ApiServer:
    def __init__(self, home: Path) -> None:
        from service.api.main import create_app

        self.settings = Settings(home=home, database_url="", broker_url="", reaper_interval_s=3600)
        upgrade(self.settings.resolved_database_url)
        self.engine = make_engine(self.settings.resolved_database_url)
        self.sessions = make_session_factory(self.engine)
        with self.sessions() as session:
            self.token = issue_token(session, "cli-user", "write", "cli tests")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.engine.dispose()

    def play_worker(self, experiment_id: str, steps: int = 40) -> None:
        """What a worker does, through the store: claim, store points in flushes, finish."""
        with self.sessions() as session:
            assert store.claim_experiment(session, experiment_id, "test worker") is not None
        for first in range(0, steps, 10):
            chunk = np.arange(first, first + 10, dtype=np.int64)
            series = [
                store.SeriesChunk("loss", None, -1, chunk, 2.0 / (chunk + 1)),
                store.SeriesChunk("grad_mean_abs", "layers.0.weight", 0, chunk, np.full(10, 1e-3)),
                store.SeriesChunk("grad_mean_abs", "layers.1.weight", 1, chunk, np.full(10, 2e-2)),
            ]
            with self.sessions() as session:
                store.write_chunks(session, experiment_id, series, [], first + 10)
            time.sleep(0.05)
        result = {"final_loss": 0.05, "final_accuracy": 0.97, "diverged_at_step": None, "test_loss": 0.07, "test_accuracy": 0.95}
        with self.sessions() as session:
            store.finish_experiment(session, experiment_id, "succeeded", result)


def invoke(api: ApiServer, *args: str):
    return runner.invoke(app, [args[0], *args[1:], "--api-url", api.url], catch_exceptions=False)


def submitted_id(output: str) -> str:
    return output.split("submitted ", 1)[1].split()[0]


def test_submit_wait_follows_the_run_and_prints_a_summary(api, spec_file) -> None:
    def worker_when_queued() -> None:
        with api.sessions() as session:
            while True:
                page, _ = store.list_experiments(session)
                if page:
                    break
                time.sleep(0.05)
        api.play_worker(page[0].id)

    player = threading.Thread(target=worker_when_queued)
    player.start()
    result = invoke(api, "submit", str(spec_file), "--wait", "--poll", "0.1", "--timeout", "60")
    player.join(10)
    assert result.exit_code == 0, result.output
    assert "submitted" in result.output
    for expected in ("succeeded", "40/40", "final_loss", "0.05", "test_accuracy", "0.95"):
        assert expected in result.output, expected


def test_status_list_series_and_cancel(api, spec_file) -> None:
    submitted = invoke(api, "submit", str(spec_file))
    assert submitted.exit_code == 0, submitted.output
    experiment_id = submitted_id(submitted.output)

    status = invoke(api, "status", experiment_id)
    assert status.exit_code == 0 and "queued" in status.output and "cli-digits" in status.output
    assert "cli-user" in status.output  # the owner of the token GRADWATCH_TOKEN carries

    listed = invoke(api, "list", "--tag", "cli")
    assert listed.exit_code == 0 and experiment_id[:8] in listed.output

    api.play_worker(experiment_id)
    series = invoke(api, "series", experiment_id, "--metric", "grad_mean_abs")
    assert series.exit_code == 0, series.output
    rows = [line for line in series.output.splitlines() if "layers." in line]
    assert len(rows) == 2 and "layers.0.weight" in rows[0] and "layers.1.weight" in rows[1]
    assert "0.001" in rows[0] and "0.02" in rows[1] and "40" in rows[0]

    as_json = invoke(api, "series", experiment_id, "--metric", "loss", "--json", "--max-points", "5")
    assert as_json.exit_code == 0, as_json.output
    (line,) = json.loads(as_json.output)["series"]
    assert line["layer"] is None and 0 < len(line["steps"]) <= 5 and line["steps"][0] == 0

    second = submitted_id(invoke(api, "submit", str(spec_file)).output)
    cancelled = invoke(api, "cancel", second)
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output


def test_api_errors_are_shown_without_a_traceback(api, spec_file) -> None:
    unknown = invoke(api, "status", "0" * 32)
    assert unknown.exit_code == 1
    assert "404" in unknown.output and "Traceback" not in unknown.output

    bad_spec = spec_file.parent / "bad.json"
    bad_spec.write_text(json.dumps({**SPEC, "training": {"steps": 10**9}}))
    rejected = invoke(api, "submit", str(bad_spec))
    assert rejected.exit_code == 1 and "422" in rejected.output and "steps" in rejected.output


def test_malformed_spec_file_is_reported_before_any_request(tmp_path) -> None:
    path = tmp_path / "spec.json"
    path.write_text('{"model": ')
    result = runner.invoke(app, ["submit", str(path), "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "is not valid JSON" in result.output


def test_unreachable_api_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from service import cli

    monkeypatch.setattr(cli.settings, "client_retry_for_s", 0.0)  # GRADWATCH_CLIENT_RETRY_FOR_S=0
    result = runner.invoke(app, ["status", "abc", "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the gradwatch API at http://127.0.0.1:9" in result.output
    assert "GRADWATCH_API_URL" in result.output


def test_worker_rejects_an_unknown_queue_before_starting_celery() -> None:
    result = runner.invoke(app, ["worker", "--queue", "cpu,tpu"])
    assert result.exit_code == 1
    assert "unknown queue tpu" in result.output


def test_worker_offers_only_cuda_safe_pools() -> None:
    result = runner.invoke(app, ["worker", "--pool", "eventlet"])
    assert result.exit_code == 2
    for pool in ("prefork", "solo", "threads"):
        assert pool in result.output


def test_stored_control_sequences_reach_the_terminal_escaped(api) -> None:
    """A name, an error and a layer name holding ESC sequences (stored by an older version
    or another writer; the API refuses them now) and rich markup, printed by the real
    `gradwatch` command: the bytes on stdout hold no ESC, the user sees the escapes."""
    import subprocess
    import sys

    hostile = "\x1b]0;owned\x07\x1b[2Jrun [bold red]x[/]\u202e"
    with api.sessions() as session:
        record = store.create_experiment(session, name=hostile, tags=["t"], spec=SPEC, queue="cpu", owner="cli-user")
        assert store.claim_experiment(session, record.id, "test worker") is not None
    chunk = np.arange(0, 10, dtype=np.int64)
    with api.sessions() as session:
        store.write_chunks(session, record.id, [store.SeriesChunk("grad_norm", "\x1b[31mlayer", 0, chunk, chunk * 1.0)], [], 10)
        store.finish_experiment(session, record.id, "failed", None, error="boom \x1b[5mblink\x9b")
    environment = {"PATH": "/usr/bin:/bin", "COLUMNS": "250", "GRADWATCH_HOME": str(api.settings.home), "GRADWATCH_TOKEN": api.token}
    for command in (["status", record.id], ["list"], ["series", record.id, "--metric", "grad_norm"]):
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", *command, "--api-url", api.url],
            capture_output=True, env=environment, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = done.stdout.decode()
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in out, (command, raw, out)
        expected = r"\x1b[31mlayer" if command[0] == "series" else r"\x1b]0;owned\x07\x1b[2Jrun [bold red]x[/]\u202e"
        assert expected in out, (command, out)
        if command[0] == "status":
            assert r"boom \x1b[5mblink\x9b" in out, out


def _command_env(home: Path, **values: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    env.update(GRADWATCH_HOME=str(home), PYTHONUNBUFFERED="1", **values)
    return env


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrate_command_creates_the_schema_once(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import subprocess
    import sys

    import sqlalchemy as sa
    from alembic.script import ScriptDirectory

    from service.db.migrate import alembic_config
    from tests.conftest import REPO_ROOT

    home = tmp_path / "home"
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    env = _command_env(home, GRADWATCH_DATABASE_URL=url)
    resolved = Settings(home=home, database_url=url).resolved_database_url
    head = ScriptDirectory.from_config(alembic_config(resolved)).get_current_head()
    for _ in range(2):  # the second run finds nothing to do
        done = subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "database is at the latest revision:" in done.stdout
        engine = make_engine(resolved)
        try:
            with engine.connect() as connection:
                assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
            assert {"experiments", "series", "point_chunks", "timestep_chunks"} <= set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    if backend == "sqlite":
        assert (home / "gradwatch.db").is_file()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_api_command_serves_from_n_processes_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    import httpx

    from tests.conftest import REPO_ROOT

    home = tmp_path / "home"
    env = _command_env(home)
    migrated = subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    issued = subprocess.run([sys.executable, "-m", "service.cli", "token", "create", "--owner", "tester"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    bearer = {"Authorization": f"Bearer {issued.stdout.strip()}"}
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as output:
        api = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120  # a bound on start-up, not the thing measured
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert api.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        servers = [child for child in _children(api.pid)
                   if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]
        assert len(servers) == 2, (servers, log.read_text())
        # Both processes share the port and the database: a write through one is read by all.
        created = httpx.post(f"http://127.0.0.1:{port}/api/v1/experiments", json=SPEC, headers=bearer, timeout=30)
        assert created.status_code == 201, created.text
        for _ in range(10):
            listed = httpx.get(f"http://127.0.0.1:{port}/api/v1/experiments", headers=bearer, timeout=30).json()
            assert [e["id"] for e in listed["items"]] == [created.json()["id"]]
        api.send_signal(signal.SIGTERM)
        assert api.wait(timeout=60) == 0, log.read_text()
        for server in servers:
            assert not Path(f"/proc/{server}").exists() or "Z" in Path(f"/proc/{server}/stat").read_text().split(") ")[1][:1]
    finally:
        if api.poll() is None:
            import os

            os.killpg(api.pid, signal.SIGKILL)
            api.wait(timeout=10)


def test_callbacks_secret_prints_it_and_rotates(api) -> None:
    first = invoke(api, "callbacks", "secret")
    assert first.exit_code == 0, first.output
    secret = first.output.strip()
    assert secret.startswith("gwcb_") and "\n" not in secret  # only the secret: SECRET=$(…) captures it
    assert invoke(api, "callbacks", "secret").output.strip() == secret
    rotated = invoke(api, "callbacks", "secret", "--rotate").output.strip()
    assert rotated.startswith("gwcb_") and rotated != secret
    assert invoke(api, "callbacks", "secret").output.strip() == rotated
