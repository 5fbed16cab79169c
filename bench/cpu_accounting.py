"""Whose CPU a benchmark's load went to: the API, PostgreSQL, the benchmark's own clients,
the browsers. On a 2-core machine they all share the same cores, so what one of them uses
is what the others cannot (Linux /proc; elsewhere every figure reads 0)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:  # gone, or not Linux
        return None


def _command_name(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as handle:
        return handle.read().strip()
    return ""


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process used so far (0 when gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def descendants(root: int) -> list[int]:
    """Every process below `root` (children, their children, …)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            found.append(child)
    return found


def chromium_pids() -> list[int]:
    """This process's descendants that are Chromium's (other users' browsers excluded)."""
    return [pid for pid in descendants(os.getpid()) if "chrom" in _command_name(pid)]


def postgres_pids() -> list[int]:
    """Every PostgreSQL process on this machine: the backends serving the load, and the
    server's own (WAL writer, checkpointer), which the load makes work too."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _command_name(int(entry)) == "postgres"]


def tree(pid: int) -> Callable[[], list[int]]:
    """A group for CpuShare: `pid` and its descendants (uvicorn's worker processes)."""
    return lambda: [pid, *descendants(pid)]


def this_process() -> list[int]:
    return [os.getpid()]


class CpuShare:
    """CPU each group of processes used within the block: a group is a function naming
    its processes, asked at both ends (one born within counts whole). `seconds` per group
    after the block; str() gives each as a share of one core."""

    def __init__(self, **groups: Callable[[], list[int]]) -> None:
        self.groups = groups

    def __enter__(self) -> CpuShare:
        self.started = time.monotonic()
        self.before = {name: {pid: cpu_s(pid) for pid in pids()} for name, pids in self.groups.items()}
        return self

    def __exit__(self, *_: object) -> None:
        self.elapsed = time.monotonic() - self.started
        self.seconds = {
            name: sum(cpu_s(pid) - self.before[name].get(pid, 0.0) for pid in pids())
            for name, pids in self.groups.items()
        }
        self.shares = {name: 100 * seconds / self.elapsed for name, seconds in self.seconds.items()}

    def __str__(self) -> str:
        return ", ".join(f"{name} {share:.0f}%" for name, share in self.shares.items()) + " of one core"
