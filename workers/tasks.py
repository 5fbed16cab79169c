"""The one task: train an experiment, given its id.

Thin and idempotent (Celery's task guide): it re-reads the experiment, claims it
atomically (`queued` → `running`), delegates to the engine, hands the records to the
writer, and always finishes the experiment: `succeeded`, `diverged`, `cancelled`,
`timed_out` (its `training.max_runtime_s` ran out: stopped like a cancel, points kept), or
`failed` with a message the user can act on (also when it ran out of memory: see
`workers.memory_guard`; the worker process survives it). A second delivery of an experiment that is
running or finished finds it no longer queued and does nothing.

Delivery guarantees (acks_late and prefetch 1 come from `service.queue.celery_config`):
- acks_late: the message is acknowledged when the task returns, so a worker that dies
  between taking a message and claiming the experiment leaves it to be redelivered.
- reject_on_worker_lost=True: when the pool child running the task dies (SIGKILL, the
  out-of-memory killer), the message is requeued rather than acknowledged. If the child
  had not claimed the experiment yet, the redelivery trains it; if it had, the redelivery
  finds it `running` and does nothing, so a requeue can never train a run twice nor loop
  on a run that kills its worker. Runs cannot resume (the engine keeps no checkpoint), so
  a run orphaned mid-training is ended by the stale-heartbeat reaper instead: the API
  marks it `failed` once its writer has been silent for `heartbeat_stale_s`, keeping
  every point stored so far.

This module must not import torch at import time (see `workers.celery_app`); the engine
is imported inside the task, in the pool child.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import sqlalchemy.exc
from sqlalchemy.orm import Session, sessionmaker

from service import store
from service.config import Settings, settings
from service.db.engine import make_engine, make_session_factory
from workers.celery_app import app
from workers.memory_guard import address_space_cap, is_out_of_memory, out_of_memory_message
from workers.writer import ProbeWriter

logger = logging.getLogger(__name__)

TASK_NAME = "gradwatch.train"
# A dropped connection, a database restarting: worth trying again.
TRANSIENT_DB_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


@app.task(name=TASK_NAME, bind=True, reject_on_worker_lost=True, ignore_result=True, max_retries=8)
def train_experiment(self: Any, experiment_id: str) -> str:
    """Celery entry point: one argument, the experiment id (docs/architecture.md)."""
    worker = f"{self.request.hostname or socket.gethostname()} pid {os.getpid()}"
    try:
        return run_experiment(experiment_id, settings, worker=worker)
    except TRANSIENT_DB_ERRORS as error:
        # The database was unreachable before the experiment could be claimed (or
        # finished): try again later rather than leave it queued. Safe: a retry of a
        # claimed experiment finds it not queued and does nothing.
        raise self.retry(exc=error, countdown=min(300, 5 * 2**self.request.retries)) from error


@lru_cache(maxsize=4)
def _session_factory_for(database_url: str) -> sessionmaker[Session]:
    # One engine per process and database, created on first use: in a prefork child,
    # after the fork, so no connection is ever shared across processes.
    return make_session_factory(make_engine(database_url))


def run_experiment(
    experiment_id: str,
    config: Settings = settings,
    worker: str = "local",
    session_factory: Callable[[], Session] | None = None,
) -> str:
    """Claim, train, store and finish one experiment; returns its final status, or
    `"skipped"` when it was not queued. Never leaves the experiment `running` unless the
    process itself dies (then the reaper ends it)."""
    session_factory = session_factory or _session_factory_for(config.resolved_database_url)
    with session_factory() as session:
        experiment = store.claim_experiment(session, experiment_id, worker)
    if experiment is None:
        logger.info(
            "experiment %s is not queued (claimed, finished or deleted): nothing to do",
            experiment_id,
        )
        return "skipped"
    logger.info("training experiment %s (%s) on %s", experiment_id, experiment.name, worker)
    failure = None
    try:
        status, result, note = _train(experiment, config, session_factory)
    except Exception as error:  # noqa: BLE001 - any failure ends the run as failed
        logger.exception("experiment %s failed", experiment_id)
        if is_out_of_memory(error):
            failure = out_of_memory_message(error, experiment.spec, _allowance(config))
        else:
            failure = _describe(error)
    except BaseException as error:
        # The worker is being shut down (SystemExit, KeyboardInterrupt): say so rather
        # than leaving the run to the reaper.
        stopped = f"the worker stopped during training ({type(error).__name__})"
        _finish(session_factory, experiment_id, "failed", None, error=stopped)
        raise
    if failure is not None:
        # Outside the except block: the error's traceback, which holds the run's tensors,
        # is gone, so a run that ran out of memory has freed it before the next one.
        _finish(session_factory, experiment_id, "failed", None, error=failure)
        return "failed"
    _finish(session_factory, experiment_id, status, result, error=note)
    logger.info("experiment %s ended %s: %s", experiment_id, status, result)
    return status


def _allowance(config: Settings) -> int:
    return max(0, config.resolved_worker_memory_cap_bytes)


def _train(
    experiment: store.ExperimentRecord, config: Settings, session_factory: Callable[[], Session]
) -> tuple[str, dict[str, Any], str | None]:
    """(final status, result, a note for `error` or None)."""
    # Imported here, in the pool child: importing torch in the prefork parent would
    # break the rule that CUDA is never initialised before a fork.
    import torch

    from workers.engine import train
    from workers.spec import to_run_config

    if config.worker_torch_threads > 0:
        torch.set_num_threads(config.worker_torch_threads)
    run_config = to_run_config(experiment.spec, config)
    # Specs stored before training.max_runtime_s existed get the server's cap.
    max_runtime_s = (experiment.spec.get("training") or {}).get("max_runtime_s") or config.limits.max_runtime_s
    on_cuda = run_config.device == "cuda" or (run_config.device == "auto" and torch.cuda.is_available())
    allowance = 0 if on_cuda else _allowance(config)
    timed_out = False
    deadline: float | None = None
    with ProbeWriter(experiment.id, session_factory, poll_s=config.worker_poll_s) as writer:

        def should_stop() -> bool:
            # Read before every step: a cancel (or a failed writer) first, then the clock.
            # The clock starts at the first step, so that a cold pool process importing
            # torch and the run loading its data do not use up a short limit.
            nonlocal timed_out, deadline
            if writer.should_stop():
                return True
            now = time.monotonic()
            if deadline is None:
                deadline = now + max_runtime_s
            timed_out = now >= deadline
            return timed_out

        with address_space_cap(allowance):
            outcome = train(run_config, writer.on_flush, should_stop)
    with session_factory() as session:
        store.record_progress(session, experiment.id, int(outcome.steps_done))
    result = {
        "final_loss": _finite_or_none(outcome.final_loss),
        "final_accuracy": _finite_or_none(outcome.final_accuracy),
        "diverged_at_step": (
            None if outcome.diverged_at_step is None else int(outcome.diverged_at_step)
        ),
        "test_loss": _finite_or_none(outcome.test_loss),
        "test_accuracy": _finite_or_none(outcome.test_accuracy),
        "steps_done": int(outcome.steps_done),
    }
    if outcome.status == "cancelled" and timed_out:
        note = (
            f"stopped by its time limit, training.max_runtime_s = {max_runtime_s} s, after "
            f"{int(outcome.steps_done)} of {run_config.training.steps} steps; every point measured is kept"
        )
        return "timed_out", result, note
    return outcome.status, result, None


def _finish(
    session_factory: Callable[[], Session],
    experiment_id: str,
    status: str,
    result: dict[str, Any] | None,
    error: str | None = None,
    attempts: int = 5,
) -> None:
    """finish_experiment, retried through short database outages: a run must not stay
    `running` because its last write met a dropped connection."""
    for attempt in range(attempts):
        try:
            with session_factory() as session:
                finished = store.finish_experiment(session, experiment_id, status, result, error)
                if finished is None:
                    logger.warning(
                        "experiment %s was no longer running (reaped?); left as it is",
                        experiment_id,
                    )
            return
        except TRANSIENT_DB_ERRORS:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2**attempt)


def _describe(error: BaseException) -> str:
    """The error as the user sees it in `GET /experiments/{id}`: the engine's own
    message (e.g. which MNIST files are missing and how to provide them)."""
    message = str(error).strip() or "no message"
    return f"training failed: {type(error).__name__}: {message}"


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
