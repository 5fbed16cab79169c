"""Since when this process has reached the database without a break: the reaper's clock.

A database outage makes every running experiment's heartbeat stale (its worker could not
write it), so a reaper that compared heartbeats with the wall clock alone would end every
live run the moment the database came back, before their workers' first write. The
reaper therefore reaps only once it has reached the database for `heartbeat_stale_s`
without a break: after an outage (or its own start, which may follow one) every worker
gets a whole `heartbeat_stale_s` of reachable database to write its heartbeat again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session


class DatabaseReachability:
    """`succeeded()` / `failed()` after each attempt; `reachable_for()` the seconds since
    the first success after the last failure (the process start counts as a failure)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None

    def succeeded(self) -> None:
        if self._since is None:
            self._since = self._clock()

    def failed(self) -> None:
        self._since = None

    def reachable_for(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since


def ping(session_factory: Callable[[], Session]) -> None:
    """One round trip to the database; raises what the driver raises when it is down."""
    with session_factory() as session:
        session.execute(sa.text("SELECT 1"))
