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
  on a run that kills its worker. A run orphaned mid-training is found by the API's
  stale-heartbeat reaper once its writer has been silent for `heartbeat_stale_s`: it goes
  back to `queued` (and to the broker) and the next claim resumes it from its last
  checkpoint, up to `max_attempts` lost attempts; then it is `failed`.

Checkpoints and resume (README, "Failure handling"): the engine checkpoints every
`logging.checkpoint_every` steps through the writer's ordered path (`on_checkpoint`);
a claim that finds a checkpoint continues from it. A warm shutdown (`workers.handback`)
checkpoints at the next step, hands the experiment back (`queued`) and sends it again.

Database outages (README, "Failure handling"): the claim is retried through an outage of
up to `db_outage_tolerance_s` (then the task is retried later by Celery, and the row,
still `queued`, is re-sent by the API's dispatch reconciler anyway); training goes on
while the writer buffers; the final status is retried until the database takes it, so
a run never stays `running` nor loses the real cause of its end to the reaper.

This module must not import torch at import time (see `workers.celery_app`); the engine
is imported inside the task, in the pool child.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service import store
from service.config import Settings, settings
from service.db.engine import make_engine, make_session_factory
from workers import early_import
from workers.celery_app import app
from workers.handback import shutting_down
from workers.memory_guard import address_space_cap, is_out_of_memory, out_of_memory_message
from workers.outage import TRANSIENT_DB_ERRORS, DatabaseUnreachable, Outage, ride_out
from workers.writer import ProbeWriter

logger = logging.getLogger(__name__)

TASK_NAME = "gradwatch.train"


@app.task(name=TASK_NAME, bind=True, reject_on_worker_lost=True, ignore_result=True, max_retries=8)
def train_experiment(self: Any, experiment_id: str) -> str:
    """Celery entry point: one argument, the experiment id (docs/architecture.md)."""
    worker = f"{self.request.hostname or socket.gethostname()} pid {os.getpid()}"
    try:
        return run_experiment(experiment_id, settings, worker=worker)
    except (*TRANSIENT_DB_ERRORS, DatabaseUnreachable) as error:
        # The database stayed unreachable past the tolerance before the experiment could
        # be claimed: try again later rather than leave it queued. Safe: a retry of a
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

    def claim() -> store.ExperimentRecord | None:
        with session_factory() as session:
            return store.claim_experiment(session, experiment_id, worker)

    experiment = ride_out(claim, f"claiming experiment {experiment_id}", _outage(config))
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
        if status == "handed_back" and _hand_back(experiment, worker, note or "", config, session_factory):
            return "handed_back"
        if status == "handed_back":  # a cancel came first: end it as one
            status, note = "cancelled", None
    except DatabaseUnreachable as error:
        logger.error("experiment %s failed: %s", experiment_id, error)
        _finish(session_factory, experiment_id, "failed", None, error=str(error), config=config, worker=worker)
        return "failed"
    except Exception as error:  # noqa: BLE001 - any failure ends the run as failed
        logger.exception("experiment %s failed", experiment_id)
        if is_out_of_memory(error):
            failure = out_of_memory_message(error, experiment.spec, _allowance(config))
        else:
            failure = _describe(error)
    except BaseException as error:
        # The worker is being shut down hard (SystemExit, KeyboardInterrupt): hand the
        # run back to resume from its last checkpoint rather than leave it to the reaper;
        # fail it only if a cancel was asked for.
        stopped = f"the worker stopped during training ({type(error).__name__})"
        if not _hand_back(experiment, worker, stopped, config, session_factory):
            _finish(session_factory, experiment_id, "cancelled", None, error=stopped, config=config, worker=worker)
        raise
    if failure is not None:
        # Outside the except block: the error's traceback, which holds the run's tensors,
        # is gone, so a run that ran out of memory has freed it before the next one.
        _finish(session_factory, experiment_id, "failed", None, error=failure, config=config, worker=worker)
        return "failed"
    _finish(session_factory, experiment_id, status, result, error=note, config=config, worker=worker)
    logger.info("experiment %s ended %s: %s", experiment_id, status, result)
    return status


def _allowance(config: Settings) -> int:
    return max(0, config.resolved_worker_memory_cap_bytes)


def _train(
    experiment: store.ExperimentRecord, config: Settings, session_factory: Callable[[], Session]
) -> tuple[str, dict[str, Any], str | None]:
    """(final status, result, a note for `error` or None)."""
    writer = ProbeWriter(
        experiment.id,
        session_factory,
        poll_s=config.worker_poll_s,
        max_buffer_bytes=config.writer_max_buffer_bytes,
        outage_tolerance_s=config.db_outage_tolerance_s,
        max_backoff_s=config.db_retry_max_backoff_s,
    )
    # The writer (and its heartbeat) starts before the slow part of setting up: importing
    # torch and loading the data can outlast heartbeat_stale_s on a busy machine, and the
    # reaper must not take a run that is only getting ready for a lost one.
    stored = ride_out(lambda: _load_checkpoint(session_factory, experiment.id), "reading the checkpoint", _outage(config))
    if stored is not None:
        writer.progress_step = stored.step
        logger.info("experiment %s resumes from its checkpoint at step %d", experiment.id, stored.step)
    with writer:
        # Imported here, in the pool child: importing torch in the prefork parent would
        # break the rule that CUDA is never initialised before a fork. A fresh child may
        # still be importing them in the background: wait for that rather than race it.
        early_import.wait()
        import torch

        from workers.engine import train
        from workers.engine.checkpoint import Checkpointing
        from workers.spec import checkpoint_interval, to_run_config

        if config.worker_torch_threads > 0:
            torch.set_num_threads(config.worker_torch_threads)
        run_config = to_run_config(experiment.spec, config)
        # Specs stored before training.max_runtime_s existed get the server's cap.
        max_runtime_s = (experiment.spec.get("training") or {}).get("max_runtime_s") or config.limits.max_runtime_s
        on_cuda = run_config.device == "cuda" or (run_config.device == "auto" and torch.cuda.is_available())
        allowance = 0 if on_cuda else _allowance(config)
        timed_out = handing_back = False
        deadline: float | None = None
        every = checkpoint_interval(experiment.spec, config, run_config.probes.flush_every)

        def should_stop() -> bool:
            # Read before every step: a cancel (or a failed writer) first, then a warm
            # shutdown of this worker, then the clock. The clock starts at the first step
            # (of this attempt), so that a cold pool process importing torch and the run
            # loading its data do not use up a short limit.
            nonlocal timed_out, deadline, handing_back
            if writer.should_stop():
                return True
            if shutting_down():
                handing_back = True
                return True
            now = time.monotonic()
            if deadline is None:
                deadline = now + max_runtime_s
            timed_out = now >= deadline
            return timed_out

        with address_space_cap(allowance):
            checkpointing = Checkpointing(
                every=every,
                save=writer.on_checkpoint,
                resume_from=None if stored is None else stored.payload,
                on_stop=lambda: handing_back and every > 0,
            )
            outcome = train(run_config, writer.on_flush, should_stop, checkpointing)

    def record_steps_done() -> None:
        with session_factory() as session:
            store.record_progress(session, experiment.id, int(outcome.steps_done))

    ride_out(record_steps_done, "recording the steps done", _outage(config))
    result = {
        "final_loss": _finite_or_none(outcome.final_loss),
        "final_accuracy": _finite_or_none(outcome.final_accuracy),
        "diverged_at_step": (
            None if outcome.diverged_at_step is None else int(outcome.diverged_at_step)
        ),
        "test_loss": _finite_or_none(outcome.test_loss),
        "test_accuracy": _finite_or_none(outcome.test_accuracy),
        "steps_done": int(outcome.steps_done),
        # What a model must beat to have learned anything (service/analysis/learning.py).
        "baseline": None if outcome.baseline is None else dataclasses.asdict(outcome.baseline),
    }
    if outcome.status == "cancelled" and handing_back and not writer.should_stop():
        at = writer.checkpoint_step
        where = f"from its checkpoint at step {at}" if at is not None else "from step 0 (it has no checkpoint)"
        return "handed_back", result, f"worker shutting down: handed back after {int(outcome.steps_done)} steps, to resume {where}"
    if outcome.status == "cancelled" and timed_out:
        note = (
            f"stopped by its time limit, training.max_runtime_s = {max_runtime_s} s, after "
            f"{int(outcome.steps_done)} of {run_config.training.steps} steps; every point measured is kept"
        )
        return "timed_out", result, note
    return outcome.status, result, None


def _load_checkpoint(session_factory: Callable[[], Session], experiment_id: str) -> store.StoredCheckpoint | None:
    with session_factory() as session:
        return store.load_checkpoint(session, experiment_id)


def _hand_back(
    experiment: store.ExperimentRecord,
    worker: str,
    why: str,
    config: Settings,
    session_factory: Callable[[], Session],
) -> bool:
    """Put the experiment back to `queued` and send its task again at once, so that
    another worker resumes it; False when a cancel was asked for meanwhile (the caller
    ends it `cancelled`). A send that fails is left to the dispatch reconciler, which
    re-sends never-dispatched rows."""

    def give_back() -> bool:
        with session_factory() as session:
            return store.hand_back(session, experiment.id, worker, why)

    if not ride_out(give_back, f"handing back experiment {experiment.id}", _outage(config, tolerance=False)):
        return False
    logger.warning("experiment %s: %s", experiment.id, why)
    try:
        train_experiment.apply_async(args=[experiment.id], queue=experiment.queue)
        with session_factory() as session:
            store.mark_dispatched(session, [experiment.id])
    except Exception:  # noqa: BLE001 - the reconciler sends it later
        logger.warning("could not send experiment %s again; the API's reconciler will", experiment.id, exc_info=True)
    return True


def _finish(
    session_factory: Callable[[], Session],
    experiment_id: str,
    status: str,
    result: dict[str, Any] | None,
    error: str | None = None,
    config: Settings = settings,
    worker: str | None = None,
) -> None:
    """finish_experiment (of this worker's run), retried until the database takes it however long it is down:
    a run must not stay `running`, nor have the reaper's "no heartbeat" replace the
    real reason it ended (the reaper waits heartbeat_stale_s after an outage, and this
    retries at least every db_retry_max_backoff_s)."""

    def finish() -> None:
        with session_factory() as session:
            finished = store.finish_experiment(
                session, experiment_id, status, result, error, keep_checkpoint=config.keep_checkpoints, worker=worker
            )
        if finished is None:
            logger.warning(
                "experiment %s was no longer running (reaped?); left as it is", experiment_id
            )

    ride_out(finish, f"finishing experiment {experiment_id}", _outage(config, tolerance=False))


def _outage(config: Settings, tolerance: bool = True) -> Outage:
    return Outage(
        config.db_outage_tolerance_s if tolerance else None, config.db_retry_max_backoff_s
    )


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
