"""`gradwatch up`'s supervisor with real child processes: a child that dies is restarted
while the other keeps running; one that keeps crashing makes it give up and stop
everything; and one gradwatch per home and per port (service/instance.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.instance import AlreadyRunning, claim_instance
from service.supervisor import RestartPolicy, supervise
from tests.e2e.stack import free_port

QUICK = RestartPolicy(backoff_s=0.05, max_restarts=2, window_s=60)


def _child(log: Path, then: str) -> list[str]:
    """A child that appends its pid to `log` on start, then runs `then`."""
    return [sys.executable, "-c", f"import os, sys, time\nopen({str(log)!r}, 'a').write(f'{{os.getpid()}}\\n')\n{then}"]


def _started(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_a_dead_child_is_restarted_while_the_other_keeps_running(tmp_path: Path) -> None:
    api_log, worker_log, crashed = tmp_path / "api", tmp_path / "worker", tmp_path / "crashed"
    said: list[str] = []

    def say(message: str) -> None:
        said.append(message)
        if message.startswith("worker restarted"):
            os.kill(os.getpid(), signal.SIGTERM)  # what `kill` of `gradwatch up` sends

    exit_code = supervise(
        {
            "api": _child(api_log, "time.sleep(120)"),
            # Dies once (status 3), then stays up: a worker lost to the OOM killer, say.
            "worker": _child(worker_log, f"p = {str(crashed)!r}\nif not os.path.exists(p):\n    open(p, 'w'); sys.exit(3)\ntime.sleep(120)"),
        },
        health_url="http://127.0.0.1:9",
        grace=1.0,
        say=say,
        policy=QUICK,
    )
    assert exit_code == 0, said
    assert said[0] == "worker exited with status 3; restarting it in 0.05 s (restart 1 of at most 2 within 60 s)"
    assert said[1].startswith("worker restarted (pid ")
    assert len(_started(api_log)) == 1, "the API must keep running while the worker comes back"
    first, second = _started(worker_log)
    assert said[1] == f"worker restarted (pid {second})" and first != second
    assert not any(_alive(pid) for pid in _started(api_log) + [second])  # stopped in order


def test_a_child_that_keeps_crashing_makes_it_give_up_and_stop_everything(tmp_path: Path) -> None:
    api_log, worker_log = tmp_path / "api", tmp_path / "worker"
    said: list[str] = []
    exit_code = supervise(
        {"api": _child(api_log, "time.sleep(120)"), "worker": _child(worker_log, "sys.exit(7)")},
        health_url="http://127.0.0.1:9",
        grace=1.0,
        say=said.append,
        policy=QUICK,
    )
    assert exit_code == 1
    assert [m.split(";")[0] for m in said if "restarting" in m] == ["worker exited with status 7"] * 2
    assert said[-1].startswith("worker exited with status 7, 3 exits within 60 s: it keeps crashing, so gradwatch gives up")
    assert len(_started(worker_log)) == 3 and len(_started(api_log)) == 1
    assert not any(_alive(pid) for pid in _started(api_log))


def test_children_die_with_a_sigkilled_supervisor(tmp_path: Path) -> None:
    api_log, worker_log = tmp_path / "api", tmp_path / "worker"
    script = (
        "import sys\nfrom service.supervisor import supervise\n"
        f"supervise({{'api': {_child(api_log, 'time.sleep(120)')!r}, 'worker': {_child(worker_log, 'time.sleep(120)')!r}}},"
        " health_url='http://127.0.0.1:9', grace=1.0, say=print)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        while len(_started(api_log)) + len(_started(worker_log)) < 2:
            assert parent.poll() is None
            time.sleep(0.05)
        children = _started(api_log) + _started(worker_log)
        assert all(_alive(pid) for pid in children)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5  # the kernel kills them as the parent exits
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, children)), "a child outlived its supervisor"
    finally:
        for pid in _started(api_log) + _started(worker_log):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_one_gradwatch_per_home(tmp_path: Path) -> None:
    port = free_port()
    with claim_instance(tmp_path, "127.0.0.1", port, f"http://127.0.0.1:{port}"):
        with pytest.raises(AlreadyRunning) as second:
            with claim_instance(tmp_path, "127.0.0.1", free_port(), "http://elsewhere"):
                pass
    message = str(second.value)
    assert f"gradwatch is already running with home {tmp_path} (pid {os.getpid()}, serving http://127.0.0.1:{port})" in message
    with claim_instance(tmp_path, "127.0.0.1", port, "http://127.0.0.1"):  # released with the block
        pass


def test_one_gradwatch_per_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AlreadyRunning, match=f"another program is using port {port} on 127.0.0.1"):
            with claim_instance(tmp_path / "home", "127.0.0.1", port, f"http://127.0.0.1:{port}"):
                pass
