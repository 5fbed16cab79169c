"""Runs the processes of `gradwatch up`, restarts the ones that die, and stops them in order.

The API and the worker are child processes, each in a session of its own: a terminal's
Ctrl-C (SIGINT to the foreground process group) then reaches only the supervisor, which
stops the children itself, API and worker together, escalating only when they do not
stop: SIGTERM (uvicorn shuts down gracefully; Celery does a warm shutdown, letting a
running experiment finish), then after `grace` seconds SIGQUIT (Celery's cold shutdown),
then SIGKILL to the whole process group (a worker's pool children included).

A child that dies is started again after a delay that doubles from `backoff_s` up to
`MAX_BACKOFF_S`, while the other keeps running (the API answers while the worker comes
back). A child that died more than `max_restarts` times within `window_s` is crashing,
not unlucky: the supervisor says so, stops everything and exits 1.

However the supervisor itself dies, its children die with it (`service/lifeline.py`:
PR_SET_PDEATHSIG on Linux), so a SIGKILLed `gradwatch up` leaves no orphan holding the
port or the SQLite file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from service.client import GradwatchClient, GradwatchError
from service.config import Settings
from service.lifeline import preexec_die_with

POLL_S = 0.2
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class RestartPolicy:
    backoff_s: float = 1.0
    max_restarts: int = 5
    window_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        return cls(
            settings.supervisor_backoff_s,
            settings.supervisor_max_restarts,
            settings.supervisor_restart_window_s,
        )


@dataclass
class Child:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None
    deaths: deque[float] = field(default_factory=deque)  # monotonic times within the window
    restart_at: float | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(
            self.argv, start_new_session=True, preexec_fn=preexec_die_with(os.getpid())
        )
        self.restart_at = None


def supervise(
    commands: dict[str, list[str]],
    health_url: str,
    grace: float,
    say: Callable[[str], None],
    policy: RestartPolicy | None = None,
) -> int:
    """Start `commands` (name → argv), report when the API at `health_url` answers,
    restart children that die, and run until SIGINT/SIGTERM (exit status 0) or until a
    child keeps crashing (exit status 1)."""
    policy = policy or RestartPolicy()
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, request_stop) for signum in handled}
    children = [Child(name, argv) for name, argv in commands.items()]
    for child in children:
        child.start()
    ready = False
    try:
        while not stop_requested:
            for child in children:
                message, gave_up = _tend(child, policy)
                if message:
                    say(message)
                if gave_up:
                    return 1
            if not ready and _healthy(health_url):
                ready = True
                say(f"ready: {health_url}/docs")
            time.sleep(POLL_S)
        return 0
    finally:
        stop({child.name: child.popen for child in children if child.popen is not None}, grace)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _tend(child: Child, policy: RestartPolicy) -> tuple[str | None, bool]:
    """Notice a death, schedule or perform a restart, or give up: (what to say, gave up)."""
    assert child.popen is not None
    now = time.monotonic()
    if child.restart_at is not None:
        if now < child.restart_at:
            return None, False
        child.start()
        return f"{child.name} restarted (pid {child.popen.pid})", False
    status = child.popen.poll()
    if status is None:
        return None, False
    try:
        # Whatever the dead child left in its session (a pool child mid-run) goes too.
        os.killpg(child.popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.deaths.append(now)
    while child.deaths and child.deaths[0] < now - policy.window_s:
        child.deaths.popleft()
    deaths = len(child.deaths)
    if deaths > policy.max_restarts:
        return (
            f"{child.name} exited with status {status}, {deaths} exits within "
            f"{policy.window_s:g} s: it keeps crashing, so gradwatch gives up and stops "
            "(see its output above; GRADWATCH_SUPERVISOR_MAX_RESTARTS allows more)"
        ), True
    delay = min(MAX_BACKOFF_S, policy.backoff_s * 2 ** (deaths - 1))
    child.restart_at = now + delay
    return (
        f"{child.name} exited with status {status}; restarting it in {delay:g} s "
        f"(restart {deaths} of at most {policy.max_restarts} within {policy.window_s:g} s)"
    ), False


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
    # /health needs no token; one look without retries: the caller polls.
    with GradwatchClient(url, timeout=1.0, token="", retry_for=0) as client:
        try:
            client.health()
            return True
        except GradwatchError:
            return False
