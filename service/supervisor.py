"""Runs the processes of `gradwatch up` and stops them in order.

The API and the worker are child processes, each in a session of its own: a terminal's
Ctrl-C (SIGINT to the foreground process group) then reaches only the supervisor, which
stops the children itself, API and worker together, escalating only when they do not
stop: SIGTERM (uvicorn shuts down gracefully; Celery does a warm shutdown, letting a
running experiment finish), then after `grace` seconds SIGQUIT (Celery's cold shutdown),
then SIGKILL to the whole process group (a worker's pool children included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from types import FrameType

from service.client import GradwatchClient, GradwatchError

POLL_S = 0.2


def supervise(
    commands: dict[str, list[str]],
    health_url: str,
    grace: float,
    say: Callable[[str], None],
) -> int:
    """Start `commands` (name → argv), report when the API at `health_url` answers, and
    run until SIGINT/SIGTERM (exit status 0) or until a child dies (exit status 1)."""
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, request_stop) for signum in handled}
    children = {
        name: subprocess.Popen(argv, start_new_session=True) for name, argv in commands.items()
    }
    ready = False
    try:
        while not stop_requested:
            exited = [
                f"{name} exited with status {child.returncode}"
                for name, child in children.items()
                if child.poll() is not None
            ]
            if exited:
                say("; ".join(exited) + ": stopping")
                return 1
            if not ready and _healthy(health_url):
                ready = True
                say(f"ready: {health_url}/docs")
            time.sleep(POLL_S)
        return 0
    finally:
        stop(children, grace)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop(children: dict[str, subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM, then SIGQUIT after `grace` seconds, then SIGKILL to each process group."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for escalation, wait_s in ((signal.SIGQUIT, grace), (signal.SIGKILL, 5.0), (None, 5.0)):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(c.poll() is None for c in children.values()):
            time.sleep(0.1)
        for child in children.values():
            if child.poll() is None and escalation is not None:
                try:
                    os.killpg(child.pid, escalation)
                except ProcessLookupError:
                    pass


def _healthy(url: str) -> bool:
    with GradwatchClient(url, timeout=1.0, retry_for=0) as client:  # one look: the caller polls
        try:
            client.health()
            return True
        except GradwatchError:
            return False
