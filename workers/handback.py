"""Warm shutdown: a worker told to stop hands its running experiment back at once.

Celery's warm shutdown (SIGTERM to the worker's main process: `docker compose stop`, a
scale-down, `gradwatch up` stopping) stops taking messages and then waits for the tasks
running in its pool children to return; the children themselves get no signal. A
training run can last days, longer than any stop grace period, so the main process sets
`SHUTTING_DOWN` (an event its pool children inherit across the fork) from Celery's
`worker_shutting_down` signal; the task's `should_stop` reads it before every step,
the engine checkpoints there, and the task puts the experiment back to `queued` and
sends it again, so another worker (or this one on its next start) resumes it without
waiting for the stale-heartbeat reaper.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

from celery import signals

logger = logging.getLogger(__name__)

# Created at import, in the worker's main process, before the pool forks: a semaphore the
# children share. Setting it is async-signal-safe enough for Celery's signal handler.
SHUTTING_DOWN = multiprocessing.Event()


@signals.worker_shutting_down.connect
def _hand_back_running_runs(sig: Any = None, how: Any = None, **_: Any) -> None:
    logger.warning("worker shutting down (%s, %s): running experiments checkpoint and go back to the queue", sig, how)
    SHUTTING_DOWN.set()


def shutting_down() -> bool:
    return SHUTTING_DOWN.is_set()
