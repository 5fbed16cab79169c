"""Since when this process has reached the database without a break: the reaper's clock.

A database outage makes every running experiment's heartbeat stale (its worker could not
write it), so a reaper that compared heartbeats with the wall clock alone would end every
live run the moment the database came back, before their workers' first write. The
reaper therefore reaps only once it has reached the database for `heartbeat_stale_s`
without a break: after an outage (or its own start, which may follow one) every worker
gets a whole `heartbeat_stale_s` of reachable database to write its heartbeat again.
"Reached" means a write went through promptly: a probe that had to wait more than
`SLOW_PROBE_S` (on a lock, on a server coming back) ends an outage rather than
continuing a reachable stretch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

SLOW_PROBE_S = 5.0


class DatabaseReachability:
    """`succeeded()` / `failed()` after each attempt; `reachable_for()` the seconds since
    the first success after the last failure (the process start counts as a failure)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None

    def now(self) -> float:
        return self._clock()

    def succeeded(self, attempt_started: float | None = None) -> None:
        """An attempt went through; one that took over SLOW_PROBE_S ends an outage."""
        now = self._clock()
        if attempt_started is not None and now - attempt_started > SLOW_PROBE_S:
            self._since = None
        if self._since is None:
            self._since = now

    def failed(self) -> None:
        self._since = None

    def reachable_for(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since


def probe_write(session_factory: Callable[[], Session]) -> None:
    """One write the reaper could have made (it changes nothing); raises what the driver
    raises when the database is down. A write, not a read: SQLite locked by another
    process still answers reads (WAL), and only a write shows the reaper could act."""
    with session_factory() as session:
        session.execute(sa.text("UPDATE experiments SET status = status WHERE 1 = 0"))
        session.commit()
