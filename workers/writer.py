"""The probe writer: a thread between the engine and the database.

The engine hands a `ProbeBatch` to `ProbeWriter.on_flush` every K recorded steps; the
writer converts it to the store's plain chunks and writes it in one transaction
(`store.write_chunks`, which also moves the progress and the heartbeat) together with any
other batches already waiting. Between batches,
every `poll_s`, it records a heartbeat and checks whether a cancel was requested, and sets
the event that the engine's `should_stop` reads: cancellation is cooperative, so it works
on every broker.

Why a thread: training must never wait on the database. `on_flush` only puts the batch on
a bounded queue; it blocks only when the writer is `max_pending` batches behind, which is
back-pressure (memory stays bounded), not a round trip per flush.

Why retries are safe: chunks are keyed by (series, first step) and inserted with ON
CONFLICT DO NOTHING, so writing a batch twice (a retry after a lost commit
acknowledgement, a redelivered task) never duplicates a point.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import sqlalchemy.exc
from sqlalchemy.orm import Session

from service import store
from service.store import SeriesChunk, TimestepChunk

logger = logging.getLogger(__name__)

# Errors worth retrying: a dropped connection, a server restart, SQLite's "database is
# locked". Anything else (a constraint we violated, a bug) fails the run at once.
TRANSIENT_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
_CLOSE = object()  # sentinel: no more batches


class TimestepBatchLike(Protocol):
    steps: np.ndarray  # int64 (S,)
    timesteps: np.ndarray  # int64 (T',)
    hidden_grad_norm: np.ndarray  # float64 (S, L, T')
    cell_grad_norm: np.ndarray | None  # float64 (S, L, T')


class ProbeBatchLike(Protocol):
    """What the writer reads from the engine's `ProbeBatch` (docs/architecture.md)."""

    steps: np.ndarray  # int64 (S,)
    values: dict[tuple[str, str | None], np.ndarray]  # (metric, layer) → float64 (S,)
    layers: tuple[str, ...]  # input → output
    timesteps: TimestepBatchLike | None


class WriterError(RuntimeError):
    """The writer could not store the measurements; the run fails with this message."""


def to_chunks(batch: ProbeBatchLike) -> tuple[list[SeriesChunk], list[TimestepChunk]]:
    """The store's chunks for one batch: a SeriesChunk per (metric, layer), a TimestepChunk
    per recurrent layer."""
    positions = {layer: index for index, layer in enumerate(batch.layers)}
    steps = np.ascontiguousarray(batch.steps, dtype=np.int64)
    series = []
    for (metric, layer), values in batch.values.items():
        if layer is not None and layer not in positions:
            raise WriterError(
                f"the engine reported metric {metric!r} for layer {layer!r}, "
                f"which is not in its layers {batch.layers}"
            )
        series.append(
            SeriesChunk(
                metric=metric,
                layer=layer,
                position=-1 if layer is None else positions[layer],
                steps=steps,
                values=np.ascontiguousarray(values, dtype=np.float64),
            )
        )
    timesteps: list[TimestepChunk] = []
    through_time = batch.timesteps
    if through_time is not None and len(through_time.steps):
        hidden = np.asarray(through_time.hidden_grad_norm, dtype=np.float64)  # (S, L, T')
        cell = through_time.cell_grad_norm
        cell = None if cell is None else np.asarray(cell, dtype=np.float64)  # (S, L, T')
        for layer_index in range(hidden.shape[1]):
            timesteps.append(
                TimestepChunk(
                    layer_index=layer_index,
                    steps=np.ascontiguousarray(through_time.steps, dtype=np.int64),
                    timesteps=np.ascontiguousarray(through_time.timesteps, dtype=np.int64),
                    hidden_grad_norm=np.ascontiguousarray(hidden[:, layer_index, :]),  # (S, T')
                    cell_grad_norm=(
                        None if cell is None else np.ascontiguousarray(cell[:, layer_index, :])
                    ),
                )
            )
    return series, timesteps


class ProbeWriter:
    """Stores an experiment's probe batches from a background thread.

        with ProbeWriter(experiment_id, session_factory, poll_s=settings.worker_poll_s) as writer:
            result = train(config, writer.on_flush, writer.should_stop)

    Leaving the block drains the queue, stops the thread and re-raises the first error the
    thread met (as `WriterError`), so a run whose points could not be stored fails.
    """

    def __init__(
        self,
        experiment_id: str,
        session_factory: Callable[[], Session],
        poll_s: float = 0.5,
        max_pending: int = 8,
        max_coalesce: int = 32,
        retries: int = 6,
        retry_backoff_s: float = 0.2,
        write_chunks: Callable[..., Any] | None = None,
    ) -> None:
        self.experiment_id = experiment_id
        self.cancel_requested = threading.Event()
        self.progress_step = 0  # steps done as far as the stored batches show
        self._session_factory = session_factory
        self._write_chunks = write_chunks or store.write_chunks  # injectable for tests
        self._poll_s = poll_s
        self._retries = retries
        self._max_coalesce = max_coalesce
        self._retry_backoff_s = retry_backoff_s
        self._pending: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"probe-writer-{experiment_id}", daemon=True
        )

    # -- the engine's side -----------------------------------------------------------------

    def should_stop(self) -> bool:
        """The engine's `should_stop`: True once a cancel was requested or storing failed."""
        return self.cancel_requested.is_set()

    def on_flush(self, batch: ProbeBatchLike) -> None:
        """The engine's `on_flush`: queue the batch; blocks only if the writer is far behind."""
        while True:
            self._raise_if_failed()
            try:
                self._pending.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ProbeWriter:
        self._thread.start()
        return self

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise its error if it had one."""
        if self._thread.is_alive():
            while self._thread.is_alive():
                try:
                    self._pending.put(_CLOSE, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        self._raise_if_failed()

    def __enter__(self) -> ProbeWriter:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is None:
            self.close()
            return
        # Training already failed: stop the writer (keeping what it can still store) and
        # let the training error, the more useful one, propagate.
        try:
            self.close()
        except WriterError:
            logger.exception("the probe writer also failed for experiment %s", self.experiment_id)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = time.monotonic()
        try:
            while True:
                try:
                    item = self._pending.get(timeout=max(0.0, next_poll - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is _CLOSE:
                    return
                if item is not None:
                    batches, closing = self._drain([item])
                    self._store(batches)
                    if closing:
                        return
                if time.monotonic() >= next_poll:
                    self._poll()
                    next_poll = time.monotonic() + self._poll_s
        except BaseException as error:  # noqa: BLE001 - handed to the training thread
            self._error = error
            # Stop training: nothing it measures from now on could be stored.
            self.cancel_requested.set()

    def _drain(self, batches: list[Any]) -> tuple[list[ProbeBatchLike], bool]:
        """Add the batches already waiting (up to `max_coalesce`) to `batches`.

        Why: when the database is slower than the engine, one transaction for several
        flushes costs little more than one for a single flush (the round trips dominate),
        so the writer catches up instead of falling further behind. Each flush keeps its
        own chunks, keyed by its first step, so idempotency is unchanged.
        Returns the batches and whether the close sentinel was among them."""
        while len(batches) < self._max_coalesce:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if item is _CLOSE:
                return batches, True
            batches.append(item)
        return batches, False

    def _store(self, batches: list[ProbeBatchLike]) -> None:
        batches = [batch for batch in batches if len(batch.steps)]
        if not batches:
            return
        series: list[SeriesChunk] = []
        timesteps: list[TimestepChunk] = []
        for batch in batches:
            batch_series, batch_timesteps = to_chunks(batch)
            series += batch_series
            timesteps += batch_timesteps
        first_step = int(batches[0].steps[0])
        progress_step = max(int(batch.steps[-1]) for batch in batches) + 1

        def write(session: Session) -> None:
            self._write_chunks(session, self.experiment_id, series, timesteps, progress_step)

        self._with_retries(f"storing steps {first_step}–{progress_step - 1}", write)
        self.progress_step = max(self.progress_step, progress_step)

    def _poll(self) -> None:
        """Heartbeat and cancel check; a failed poll is retried at the next one (the reaper
        only fails the run if the database stays unreachable for heartbeat_stale_s).

        Training also stops when the experiment is no longer `running`: the reaper failed
        it (this worker was silent too long) or it was deleted. Its result could not be
        stored any more, so going on would only waste the device."""
        try:
            with self._session_factory() as session:
                store.record_progress(session, self.experiment_id, self.progress_step)
                if store.is_cancel_requested(session, self.experiment_id):
                    self.cancel_requested.set()
                    return
                experiment = store.get_experiment(session, self.experiment_id)
                if experiment is None or experiment.status != "running":
                    logger.warning(
                        "experiment %s is no longer running; stopping its training",
                        self.experiment_id,
                    )
                    self.cancel_requested.set()
        except TRANSIENT_ERRORS as error:
            logger.warning(
                "heartbeat for experiment %s failed, will retry: %s", self.experiment_id, error
            )

    def _with_retries(self, what: str, operation: Callable[[Session], None]) -> None:
        for attempt in range(self._retries + 1):
            try:
                with self._session_factory() as session:
                    operation(session)
                return
            except TRANSIENT_ERRORS as error:
                if attempt == self._retries:
                    raise WriterError(
                        f"{what} of experiment {self.experiment_id} failed after "
                        f"{attempt + 1} attempts: {error}"
                    ) from error
                delay = self._retry_backoff_s * 2**attempt
                logger.warning("%s failed (%s); retrying in %.1f s", what, error, delay)
                time.sleep(delay)

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, WriterError):
            raise self._error
        raise WriterError(
            f"storing the measurements failed: {type(self._error).__name__}: {self._error}"
        ) from self._error
