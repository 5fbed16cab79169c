"""One `gradwatch up` per home and per port: a lock file in GRADWATCH_HOME and a port check.

The lock is an `flock` on `<home>/gradwatch-up.lock`, held for the supervisor's lifetime:
the kernel releases it when the process ends however it ends (a SIGKILL leaves no stale
lock to clean up), and its children never hold it (Python opens files non-inheritable).
The file also says who holds it (pid, URL), for the message a second `gradwatch up` prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from service.client import GradwatchClient, GradwatchError

LOCK_NAME = "gradwatch-up.lock"


class AlreadyRunning(RuntimeError):
    """Another gradwatch holds this home or this port; the message says where."""


@contextlib.contextmanager
def claim_instance(home: Path, host: str, port: int, url: str) -> Iterator[None]:
    """Hold the home's lock while the block runs; AlreadyRunning if another gradwatch holds
    it, or if something already listens on host:port."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(_held_by(path, home)) from None
        _check_port(host, port, url)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps({"pid": os.getpid(), "url": url}).encode())
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _held_by(path: Path, home: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    pid, url = holder.get("pid", "?"), holder.get("url", "an unknown address")
    return (
        f"gradwatch is already running with home {home} (pid {pid}, serving {url}); "
        f"stop it first (Ctrl-C in its terminal, or kill {pid}), "
        "or give this one another GRADWATCH_HOME"
    )


def _check_port(host: str, port: int, url: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a previous run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return
        except OSError as error:
            taken = error
    with GradwatchClient(url, timeout=2.0) as client:
        try:
            client.health()
            who = f"gradwatch is already running at {url} (with another home)"
        except GradwatchError:
            who = f"another program is using port {port} on {host} ({taken.strerror})"
    raise AlreadyRunning(f"{who}; choose another port with --port, or stop it first")
