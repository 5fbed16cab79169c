"""Riding out a database outage: retry with backoff, and know when to stop trying.

One `Outage` follows one stretch of failed attempts: it starts when the first failing
attempt started (a SQLite write blocked by another process's lock fails only after the
busy timeout, and that wait is part of the outage) and ends at the next success. The
delay between attempts doubles from `base_backoff_s` up to `max_backoff_s`, so a short
blip costs a fraction of a second and a long outage costs one attempt every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc

logger = logging.getLogger(__name__)

# A dropped connection, a server restarting or refusing connections, SQLite's "database
# is locked": worth trying again. Anything else (a constraint we violated, a bug) is not.
TRANSIENT_DB_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
T = TypeVar("T")


class DatabaseUnreachable(RuntimeError):
    """The database stayed unreachable for longer than the tolerance; the message is the
    run's error as the user reads it."""


class Outage:
    def __init__(
        self,
        tolerance_s: float | None,
        max_backoff_s: float = 5.0,
        base_backoff_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tolerance_s = tolerance_s  # None: never give up
        self._max_backoff_s = max_backoff_s
        self._base_backoff_s = base_backoff_s
        self._clock = clock
        self.started: float | None = None
        self.failures = 0

    def now(self) -> float:
        return self._clock()

    def failed(self, attempt_started: float) -> None:
        if self.started is None:
            self.started = attempt_started
        self.failures += 1

    def succeeded(self) -> None:
        self.started = None
        self.failures = 0

    def duration(self) -> float:
        return 0.0 if self.started is None else self._clock() - self.started

    def exceeded(self) -> bool:
        return self.tolerance_s is not None and self.duration() > self.tolerance_s

    def next_delay(self) -> float:
        return min(self._max_backoff_s, self._base_backoff_s * 2 ** max(0, self.failures - 1))

    def describe(self, what: str, error: BaseException) -> str:
        return (
            f"database unreachable for {self.duration():.0f} s while {what} "
            f"(tolerance GRADWATCH_DB_OUTAGE_TOLERANCE_S = {self.tolerance_s:g} s): "
            f"{_first_line(error)}"
        )


def ride_out(
    operation: Callable[[], T],
    what: str,
    outage: Outage,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`operation()` until it succeeds, through transient database errors; raises
    `DatabaseUnreachable` (from the last error) once the outage exceeds its tolerance."""
    while True:
        attempt_started = outage.now()
        try:
            result = operation()
        except TRANSIENT_DB_ERRORS as error:
            outage.failed(attempt_started)
            if outage.exceeded():
                raise DatabaseUnreachable(outage.describe(what, error)) from error
            delay = outage.next_delay()
            logger.warning(
                "%s failed (database unreachable for %.0f s): %s; retrying in %.1f s",
                what, outage.duration(), _first_line(error), delay,
            )
            sleep(delay)
            continue
        outage.succeeded()
        return result


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
