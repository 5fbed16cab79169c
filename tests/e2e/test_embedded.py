"""End to end on the embedded default, which needs no server: a SQLite file and kombu's
filesystem broker. First the API and a Celery worker as separate processes, driven
through the Python client; then `gradwatch up` itself, driven through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import GradwatchClient, GradwatchError
from tests.conftest import REPO_ROOT
from tests.e2e.stack import STARTUP_TIMEOUT_S, Stack, free_port

TINY_MLP = {
    "name": "embedded-mlp",
    "tags": ["embedded"],
    "model": {"type": "mlp", "hidden_sizes": [32, 32], "activation": "sigmoid"},
    "dataset": {"name": "digits"},
    "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "steps": 60, "seed": 0},
}
TINY_LSTM = {
    "name": "embedded-lstm",
    "model": {"type": "lstm", "hidden_size": 16},
    "dataset": {"name": "adding", "seq_len": 20},
    "training": {"optimizer": "adam", "lr": 0.01, "batch_size": 16, "steps": 20, "seed": 0},
}


def test_client_against_the_api_on_the_embedded_broker(embedded_stack: Stack) -> None:
    stack = embedded_stack
    stack.start_api()
    stack.start_worker(queues="cpu,gpu")
    client = stack.client

    mlp = client.submit(TINY_MLP)
    lstm = client.submit(TINY_LSTM)
    assert mlp["status"] == "queued"
    finished = stack.wait(mlp["id"], timeout=120)
    assert finished["status"] == "succeeded", finished
    assert finished["progress"] == {"step": 60, "total": 60}
    # The worker's numbers are the engine's: the same spec trained here, in process, on
    # the same seed gives the same result and the same series.
    expected, expected_batches = train_in_process(TINY_MLP, stack.data_dir)
    assert finished["result"]["final_accuracy"] == pytest.approx(expected.final_accuracy, abs=1e-9)
    assert finished["result"]["final_loss"] == pytest.approx(expected.final_loss, rel=1e-5)
    assert finished["result"]["test_accuracy"] == pytest.approx(expected.test_accuracy, abs=1e-9)

    (loss,) = client.series(mlp["id"], "loss")["series"]
    assert loss["layer"] is None and loss["steps"] == list(range(60))
    metrics = client.metrics(mlp["id"])["metrics"]
    recorded: dict[str, list[str | None]] = {}
    for metric, layer in expected_batches[0].values:
        recorded.setdefault(metric, []).append(layer)
    assert {m: sorted(ls, key=str) for m, ls in metrics.items()} == {m: sorted(ls, key=str) for m, ls in recorded.items()}
    assert metrics["grad_mean_abs"] == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "head.weight", "head.bias"]
    assert metrics["loss"] == [None]
    downsampled = client.series(mlp["id"], "grad_mean_abs", max_points=10)["series"]
    assert downsampled and all(len(line["steps"]) <= 10 for line in downsampled)
    stored, distinct = stack.stored_points(mlp["id"])
    assert stored == distinct > 0

    recurrent = stack.wait(lstm["id"], timeout=120)
    assert recurrent["status"] == "succeeded", recurrent
    through_time = client.timesteps(lstm["id"])
    assert through_time["timesteps"][0] == 0 and through_time["timesteps"][-1] == 19
    assert len(through_time["hidden_grad_norm"]) == len(through_time["steps"]) > 0
    assert through_time["cell_grad_norm"] is not None

    assert [e["id"] for e in client.list(tag="embedded")["items"]] == [mlp["id"]]
    with pytest.raises(GradwatchError) as unknown_metric:
        client.series(mlp["id"], "no_such_metric")
    assert 400 <= unknown_metric.value.status_code < 500 and "no_such_metric" in str(unknown_metric.value)
    client.delete(mlp["id"])
    with pytest.raises(GradwatchError) as gone:
        client.get(mlp["id"])
    assert gone.value.status_code == 404


def train_in_process(spec: dict, data_dir: Path):  # noqa: ANN201
    """(RunResult, probe batches) of `spec` trained by the engine in this process."""
    import torch

    from service.config import Settings
    from service.schemas.spec import ExperimentSpec
    from workers.engine import train
    from workers.spec import to_run_config

    stored = ExperimentSpec.model_validate(spec).model_dump(mode="json")
    config = to_run_config(stored, Settings(data_dir=data_dir, allow_download=False))
    batches: list = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stack's worker (GRADWATCH_WORKER_TORCH_THREADS=1)
    try:
        return train(config, batches.append), batches
    finally:
        torch.set_num_threads(threads)


def processes_with_home(home: Path) -> list[int]:
    """Every live process started with GRADWATCH_HOME=home (the API, the worker, its pool child)."""
    marker = f"GRADWATCH_HOME={home}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes() and (entry / "stat").read_text().split(") ")[1][0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def up_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "gradwatch-home"
    yield home
    for pid in processes_with_home(home):  # whatever a failed test left behind
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_gradwatch_up(home: Path, data_dir: Path, port: int, log: Path, **extra_env: str) -> tuple[subprocess.Popen[bytes], dict[str, str], list[str]]:
    """`gradwatch up` in a session of its own, its output in `log`: (process, env, argv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    env.update(GRADWATCH_HOME=str(home), GRADWATCH_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra_env)
    argv = [sys.executable, "-m", "service.cli", "up", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        up = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    return up, env, argv


def wait_until_healthy(url: str, up: subprocess.Popen[bytes], log: Path) -> None:
    with GradwatchClient(url) as client:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                client.health()
                return
            except GradwatchError:
                assert up.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)


def test_gradwatch_up_serves_trains_and_stops_cleanly_on_ctrl_c(
    up_home: Path, mnist_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gradwatch up` also writes an admin token to $GRADWATCH_HOME/token, which the CLI and
    the client then send with nothing configured by hand (no GRADWATCH_TOKEN anywhere)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    up, env, _ = start_gradwatch_up(up_home, mnist_data_dir, port, log)
    try:
        wait_until_healthy(url, up, log)
        assert (up_home / "gradwatch.db").exists()
        token_file = up_home / "token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert token_file.read_text().startswith("gw_")
        with GradwatchClient(url, token="") as anonymous, pytest.raises(GradwatchError) as refused:
            anonymous.list()
        assert refused.value.status_code == 401

        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({**TINY_MLP, "training": {**TINY_MLP["training"], "steps": 30}}))
        submitted = subprocess.run(
            [sys.executable, "-m", "service.cli", "submit", str(spec), "--wait", "--poll", "0.2", "--timeout", "150", "--api-url", url],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr + log.read_text()
        assert "succeeded" in submitted.stdout and "final_loss" in submitted.stdout
        monkeypatch.setenv("GRADWATCH_HOME", str(up_home))  # what the client's settings read
        monkeypatch.delenv("GRADWATCH_TOKEN", raising=False)
        with GradwatchClient(url) as client:
            (listed,) = client.list()["items"]
        assert listed["name"] == TINY_MLP["name"] and listed["owner"] == "admin" and listed["status"] == "succeeded"
        assert len(processes_with_home(up_home)) >= 3  # up, the API, the worker (and its pool child)

        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        assert up.wait(timeout=30) == 0, log.read_text()
        deadline = time.monotonic() + 10
        while processes_with_home(up_home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_with_home(up_home) == [], log.read_text()
        assert "gradwatch stopped" in log.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)


def test_messages_removed_from_the_embedded_broker_still_all_run(embedded_stack: Stack) -> None:
    stack = embedded_stack
    stack.extra_env.update(GRADWATCH_REDISPATCH_AFTER_S="2", GRADWATCH_DISPATCH_INTERVAL_S="0.5")
    stack.start_api()
    small = {**TINY_MLP, "training": {**TINY_MLP["training"], "steps": 20}}
    queued = [stack.client.submit({**small, "name": f"lost-{i}"})["id"] for i in range(3)]
    messages = sorted((stack.home / "broker" / "queue").glob("*.msg"))
    assert len(messages) == 3
    for message in messages:  # the broker folder lost its files
        message.unlink()
    stack.start_worker(queues="cpu,gpu")
    for experiment_id in queued:
        finished = stack.wait(experiment_id, timeout=120)
        assert finished["status"] == "succeeded", finished
        stored, distinct = stack.stored_points(experiment_id)
        assert stored == distinct > 0


def _children(parent: int) -> dict[int, bytes]:
    """pid → command line of every live child of `parent`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            if fields[0] != "Z" and int(fields[1]) == parent:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
    return found


def _worker_pid(up_pid: int) -> int:
    (pid,) = [pid for pid, cmdline in _children(up_pid).items() if b"\0worker\0" in cmdline]
    return pid


def test_gradwatch_up_restarts_its_worker_refuses_a_second_instance_and_dies_whole(
    up_home: Path, mnist_data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    up, env, up_argv = start_gradwatch_up(
        up_home, mnist_data_dir, port, log, GRADWATCH_WORKER_TORCH_THREADS="1", GRADWATCH_ALLOW_DOWNLOAD="false",
        # The killed worker's run is found lost this soon, then resumes from its checkpoint.
        GRADWATCH_HEARTBEAT_STALE_S="10", GRADWATCH_REAPER_INTERVAL_S="0.5",
    )  # fmt: skip
    try:
        wait_until_healthy(url, up, log)
        # The admin token `gradwatch up` wrote (this test process has another GRADWATCH_HOME).
        client = GradwatchClient(url, token=(up_home / "token").read_text().strip())
        deadline = time.monotonic() + STARTUP_TIMEOUT_S

        # A second `gradwatch up`: on the same home, then from another home on the same port.
        same_home = subprocess.run(up_argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert same_home.returncode == 1
        assert f"gradwatch is already running with home {up_home} (pid {up.pid}, serving {url})" in " ".join(same_home.stderr.split())
        other_home = subprocess.run(up_argv, cwd=REPO_ROOT, env={**env, "GRADWATCH_HOME": str(tmp_path / "other")},
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
        assert other_home.returncode == 1
        assert f"gradwatch is already running at {url}" in " ".join(other_home.stderr.split())

        # The worker killed mid-run: restarted while the API keeps answering, and the run
        # resumes from its last checkpoint (in the SQLite file) and succeeds.
        resumable = {
            **TINY_MLP, "name": "orphaned", "training": {**TINY_MLP["training"], "steps": 4_000},
            "logging": {"checkpoint_every": 500},
        }  # fmt: skip
        running = client.submit(resumable)
        while client.get(running["id"])["progress"]["step"] < 600:
            assert time.monotonic() < deadline + 120, log.read_text()
            time.sleep(0.2)
        killed = _worker_pid(up.pid)
        os.kill(killed, signal.SIGKILL)
        while "worker restarted (pid " not in log.read_text():
            assert client.health()["status"] == "ok"  # the API answers throughout
            assert up.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "worker exited with status -9; restarting it in 1 s" in log.read_text()
        restarted = _worker_pid(up.pid)
        assert restarted != killed and f"worker restarted (pid {restarted})" in log.read_text()
        after = client.submit({**TINY_MLP, "name": "after-restart"})
        assert client.wait(after["id"], timeout=180, poll=0.25)["status"] == "succeeded", log.read_text()
        resumed = client.wait(running["id"], timeout=300, poll=0.25)
        assert resumed["status"] == "succeeded", (resumed, log.read_text())
        lost, finished = resumed["attempts"]
        assert lost["ending"] == "lost" and finished["ending"] == "finished", resumed["attempts"]
        assert finished["resumed_from_step"] >= 500 and finished["resumed_from_step"] % 500 == 0
        (loss,) = client.series(running["id"], "loss")["series"]
        assert loss["steps"] == list(range(4_000))

        # The parent SIGKILLed: no process of this gradwatch is left.
        assert len(processes_with_home(up_home)) >= 4  # up, the API, the worker, its pool child
        up.kill()
        up.wait(timeout=10)
        deadline = time.monotonic() + 10
        while processes_with_home(up_home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_with_home(up_home) == [], log.read_text()
        client.close()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
def gradwatch(stack: Stack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`gradwatch ARGS --api-url …` as a command, in the stack's environment."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args, "--api-url", stack.api_url],
        cwd=REPO_ROOT, env=stack.env(), capture_output=True, text=True, timeout=timeout,
    )


def test_cli_cancels_a_running_run_and_plots_what_it_measured(embedded_stack: Stack, tmp_path: Path) -> None:
    stack = embedded_stack
    stack.start_api()
    stack.start_worker()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "name": "cli-cancel", "model": {"type": "mlp", "hidden_sizes": [32, 32]}, "dataset": {"name": "digits"},
        "training": {"steps": 1_000_000, "batch_size": 32},
    }))
    submitted = gradwatch(stack, "submit", str(spec))
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    experiment_id = submitted.stdout.split("submitted ", 1)[1].split()[0]
    stack.wait_for_step(experiment_id, 100, timeout=120)

    cancelled = gradwatch(stack, "cancel", experiment_id)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"cancel requested for {experiment_id} (now running)" in cancelled.stdout
    finished = stack.wait(experiment_id, timeout=60)
    assert finished["status"] == "cancelled", finished
    status = gradwatch(stack, "status", experiment_id)
    assert status.returncode == 0 and "cancelled" in status.stdout, status.stdout + status.stderr

    out = tmp_path / "plots"
    plotted = gradwatch(stack, "plot", experiment_id, "--out", str(out), "--metric", "grad_norm")
    assert plotted.returncode == 0, plotted.stdout + plotted.stderr
    names = [f"{experiment_id}-grad_norm.png", f"{experiment_id}-profile-grad_norm.png"]
    assert sorted(path.name for path in out.iterdir()) == sorted(names)
    # What the command saved is what the API serves for the same pictures.
    assert (out / names[0]).read_bytes() == stack.client.plot(f"/experiments/{experiment_id}/plot.png", metric="grad_norm")
    assert (out / names[1]).read_bytes() == stack.client.plot(f"/experiments/{experiment_id}/profile.png", metric="grad_norm")
    unknown = gradwatch(stack, "plot", experiment_id, "--out", str(out), "--metric", "nope")
    assert unknown.returncode == 1 and "no metric 'nope'" in unknown.stdout + unknown.stderr
    assert "Traceback" not in unknown.stdout + unknown.stderr
