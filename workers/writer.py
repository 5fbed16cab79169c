"""The probe writer: a thread between the engine and the database.

The engine hands a `ProbeBatch` to `ProbeWriter.on_flush` every K recorded steps; the
writer converts it to the store's plain chunks and writes it in one transaction
(`store.write_chunks`, which also moves the progress and the heartbeat) together with any
other batches already waiting. Between batches,
every `poll_s`, it records a heartbeat and checks whether a cancel was requested, and sets
the event that the engine's `should_stop` reads: cancellation is cooperative, so it works
on every broker.

Why a thread: training must never wait on the database. `on_flush` only puts the batch in
a buffer; it blocks only when the batches not yet written hold `max_buffer_bytes`, which is
back-pressure (memory stays bounded, nothing is dropped), not a round trip per flush.

Database outages (README, "Failure handling"): a write that meets a transient error is
retried with a doubling delay (up to `max_backoff_s`) while training goes on and the
buffer fills; at its bound training pauses. The first attempt after a failure writes the
heartbeat before anything else, so the reaper sees the run alive as soon as the database
is back. Past `outage_tolerance_s` of continuous failure the writer gives up with
`DatabaseUnreachable` ("database unreachable for N s …"): training stops, what it holds
gets one more tolerance period to be stored, and the task records that cause as the
run's error once the database takes it.

Checkpoints (workers/engine/checkpoint.py) take the same ordered path: `on_checkpoint`
puts one in the buffer after the batches handed out before it, and it is stored only
after them, so a checkpoint at step s is never in the database before every point up to
s. Of several waiting at once only the latest is stored.

Why retries are safe: chunks are keyed by (series, first step) and inserted with ON
CONFLICT DO NOTHING, so writing a batch twice (a retry after a lost commit
acknowledgement, a redelivered task) never duplicates a point.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import numpy as np
from sqlalchemy.orm import Session

from service import store
from service.store import SeriesChunk, TimestepChunk
from service.store.histograms import HistogramChunk
from workers.outage import TRANSIENT_DB_ERRORS, DatabaseUnreachable, Outage, ride_out

logger = logging.getLogger(__name__)


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
    # (metric, layer) → (steps int64 (K,), values float64 (K,)): series on their own schedule
    sparse_values: dict[tuple[str, str | None], tuple[np.ndarray, np.ndarray]]
    histograms: Any  # the engine's HistogramBatch or None: steps (S,), keys (K,), counts (S, K, B+4), edges


@dataclass(frozen=True)
class PendingCheckpoint:
    """A checkpoint in the writer's buffer, behind the batches it follows."""

    step: int  # steps done when it was taken
    payload: bytes


class WriterError(RuntimeError):
    """The writer could not store the measurements; the run fails with this message."""


def batch_nbytes(batch: ProbeBatchLike) -> int:
    """The memory one batch holds: its steps, values and gradients through time."""
    size = batch.steps.nbytes + sum(values.nbytes for values in batch.values.values())
    size += sum(steps.nbytes + values.nbytes for steps, values in batch.sparse_values.values())
    if getattr(batch, "histograms", None) is not None:
        size += batch.histograms.counts.nbytes
    through_time = batch.timesteps
    if through_time is not None:
        size += through_time.hidden_grad_norm.nbytes
        if through_time.cell_grad_norm is not None:
            size += through_time.cell_grad_norm.nbytes
    return int(size)


def to_chunks(batch: ProbeBatchLike) -> tuple[list[SeriesChunk], list[TimestepChunk]]:
    """The store's chunks for one batch: a SeriesChunk per (metric, layer), a TimestepChunk
    per recurrent layer."""
    positions = {layer: index for index, layer in enumerate(batch.layers)}
    steps = np.ascontiguousarray(batch.steps, dtype=np.int64)
    columns = [(key, steps, values) for key, values in batch.values.items()]
    columns += [(key, np.ascontiguousarray(own, dtype=np.int64), values) for key, (own, values) in batch.sparse_values.items() if len(own)]
    series = []
    for (metric, layer), steps, values in columns:
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


def to_histogram_chunks(batch: ProbeBatchLike) -> list[HistogramChunk]:
    """A HistogramChunk per (metric, layer) of the batch's histograms."""
    histograms = getattr(batch, "histograms", None)
    if histograms is None or not len(histograms.steps):
        return []
    steps = np.ascontiguousarray(histograms.steps, dtype=np.int64)
    return [
        HistogramChunk(
            metric=metric,
            layer=layer,
            position=position,
            steps=steps,
            counts=np.ascontiguousarray(histograms.counts[:, position], dtype=np.int64),  # (S, B + 4)
            edges=np.asarray(histograms.edges[metric], dtype=np.float64),
        )
        for position, (metric, layer) in enumerate(histograms.keys)
    ]


class ProbeWriter:
    """Stores an experiment's probe batches from a background thread.

        with ProbeWriter(experiment_id, session_factory, poll_s=settings.worker_poll_s) as writer:
            result = train(config, writer.on_flush, writer.should_stop)

    Leaving the block writes what is buffered, stops the thread and re-raises the first
    error the thread met (`WriterError`, or `DatabaseUnreachable` past the outage
    tolerance), so a run whose points could not be stored fails with the reason.
    """

    def __init__(
        self,
        experiment_id: str,
        session_factory: Callable[[], Session],
        poll_s: float = 0.5,
        max_buffer_bytes: int = 256 * 2**20,
        max_coalesce: int = 32,
        outage_tolerance_s: float = 600.0,
        max_backoff_s: float = 5.0,
        retry_backoff_s: float = 0.2,
        write_chunks: Callable[..., Any] | None = None,
    ) -> None:
        self.experiment_id = experiment_id
        self.cancel_requested = threading.Event()
        self.progress_step = 0  # steps done as far as the stored batches show
        self._session_factory = session_factory
        self._write_chunks = write_chunks or store.write_chunks  # injectable for tests
        self._poll_s = poll_s
        self._max_coalesce = max_coalesce
        self._max_buffer_bytes = max_buffer_bytes
        self._max_backoff_s = max_backoff_s
        self._retry_backoff_s = retry_backoff_s
        self._outage = Outage(outage_tolerance_s, max_backoff_s, retry_backoff_s)
        # Batches not yet stored, with their sizes; a batch leaves only once it is stored,
        # so `_buffered_bytes` counts the ones being written too.
        self._buffer: deque[tuple[ProbeBatchLike | PendingCheckpoint, int]] = deque()
        self.checkpoint_step: int | None = None  # the step of the latest checkpoint stored
        self._buffered_bytes = 0
        self._closing = False
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"probe-writer-{experiment_id}", daemon=True
        )

    # -- the engine's side -----------------------------------------------------------------

    def should_stop(self) -> bool:
        """The engine's `should_stop`: True once a cancel was requested or storing failed."""
        return self.cancel_requested.is_set()

    def on_flush(self, batch: ProbeBatchLike) -> None:
        """The engine's `on_flush`: buffer the batch; blocks (training pauses) only while
        the buffer is full, e.g. through a database outage. A batch larger than the whole
        buffer is still taken, alone, rather than never."""
        self._put(batch, batch_nbytes(batch))

    def on_checkpoint(self, step: int, payload: bytes) -> None:
        """The engine's `Checkpointing.save`: store this checkpoint once every batch handed
        out before it is stored; buffered (and bounded) like a batch."""
        self._put(PendingCheckpoint(step, payload), len(payload))

    def _put(self, entry: ProbeBatchLike | PendingCheckpoint, size: int) -> None:
        with self._changed:
            paused = False
            while True:
                self._raise_if_failed()
                if not self._buffer or self._buffered_bytes + size <= self._max_buffer_bytes:
                    break
                if not paused:
                    paused = True
                    logger.warning(
                        "experiment %s: the writer holds %d bytes the database has not taken "
                        "(max_buffer_bytes %d): training waits for it",
                        self.experiment_id, self._buffered_bytes, self._max_buffer_bytes,
                    )
                self._changed.wait(0.1)
            self._buffer.append((entry, size))
            self._buffered_bytes += size
            self._changed.notify_all()

    @property
    def buffered_bytes(self) -> int:
        """What the writer holds that the database has not taken yet."""
        return self._buffered_bytes

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ProbeWriter:
        self._thread.start()
        return self

    def close(self) -> None:
        """Write what is buffered, stop the thread, and raise its error if it had one.

        After the writer gave up on an outage, what it still holds gets one more
        tolerance period to reach the database (training has stopped, and the run's
        final status waits for the database anyway); only then is it dropped."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        if isinstance(self._error, DatabaseUnreachable) and self._buffer:
            self._store_what_is_left()
        self._raise_if_failed()

    def _store_what_is_left(self) -> None:
        self._outage = Outage(self._outage.tolerance_s, self._max_backoff_s, self._retry_backoff_s)
        batches = [batch for batch, _ in self._buffer]
        try:
            for start in range(0, len(batches), self._max_coalesce):
                self._store(batches[start : start + self._max_coalesce])
        except DatabaseUnreachable as error:
            logger.error(
                "experiment %s: dropping the measurements the database never took: %s",
                self.experiment_id, error,
            )
        self._buffer.clear()
        self._buffered_bytes = 0

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
        except (WriterError, DatabaseUnreachable):
            logger.exception("the probe writer also failed for experiment %s", self.experiment_id)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = time.monotonic()
        try:
            while True:
                with self._changed:
                    if not self._buffer and not self._closing:
                        self._changed.wait(max(0.0, next_poll - time.monotonic()))
                    # Up to `max_coalesce` waiting flushes in one transaction: when the
                    # database is slower than the engine (or just came back), one
                    # transaction for several flushes costs little more than one for a
                    # single flush, so the writer catches up instead of falling further
                    # behind. Each flush keeps its own chunks, keyed by its first step.
                    group = list(islice(self._buffer, self._max_coalesce))
                if group:
                    self._store([batch for batch, _ in group])
                    with self._changed:
                        for _ in group:
                            self._buffer.popleft()
                        self._buffered_bytes -= sum(size for _, size in group)
                        self._changed.notify_all()
                with self._changed:
                    if self._closing and not self._buffer:
                        return
                if time.monotonic() >= next_poll:
                    self._poll()
                    next_poll = time.monotonic() + self._poll_s
        except BaseException as error:  # noqa: BLE001 - handed to the training thread
            self._error = error
            # Stop training: nothing it measures from now on could be stored.
            self.cancel_requested.set()
            with self._changed:
                self._changed.notify_all()

    def _store(self, entries: list[ProbeBatchLike | PendingCheckpoint]) -> None:
        checkpoints = [entry for entry in entries if isinstance(entry, PendingCheckpoint)]
        batches = [entry for entry in entries if not isinstance(entry, PendingCheckpoint) and len(entry.steps)]
        if not batches and not checkpoints:
            return
        series: list[SeriesChunk] = []
        timesteps: list[TimestepChunk] = []
        histograms: list[HistogramChunk] = []
        for batch in batches:
            batch_series, batch_timesteps = to_chunks(batch)
            series += batch_series
            timesteps += batch_timesteps
            histograms += to_histogram_chunks(batch)
        # Only a run that measures histograms passes them (the writer's store is injectable).
        extra = {"histograms": histograms} if histograms else {}
        latest = checkpoints[-1] if checkpoints else None
        if batches:
            first_step = int(batches[0].steps[0])
            progress_step = max(int(batch.steps[-1]) for batch in batches) + 1
            what = f"storing steps {first_step}–{progress_step - 1}"
        else:
            progress_step, what = self.progress_step, ""
        if latest is not None:
            what = f"{what} and " if what else ""
            what += f"the checkpoint at step {latest.step}"

        def write() -> None:
            if self._outage.failures:
                # The database just failed us: the heartbeat goes first, in a transaction
                # of its own, so the reaper sees this run alive before the backlog lands.
                self._heartbeat()
            if batches:
                with self._session_factory() as session:
                    self._write_chunks(session, self.experiment_id, series, timesteps, progress_step, **extra)
            if latest is not None:
                # After the points above: a checkpoint never runs ahead of what is stored.
                with self._session_factory() as session:
                    store.save_checkpoint(session, self.experiment_id, latest.step, latest.payload)

        ride_out(write, what, self._outage)
        self.progress_step = max(self.progress_step, progress_step)
        if latest is not None:
            self.checkpoint_step = latest.step

    def _heartbeat(self) -> None:
        with self._session_factory() as session:
            store.record_progress(session, self.experiment_id, self.progress_step)

    def _poll(self) -> None:
        """Heartbeat and cancel check; a failed poll is retried at the next one, and past
        the outage tolerance it gives up like a failed write.

        Training also stops when the experiment is no longer `running`: the reaper failed
        it (this worker was silent too long) or it was deleted. Its result could not be
        stored any more, so going on would only waste the device."""
        attempt_started = self._outage.now()
        try:
            with self._session_factory() as session:
                store.record_progress(session, self.experiment_id, self.progress_step)
                self._outage.succeeded()
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
        except TRANSIENT_DB_ERRORS as error:
            self._outage.failed(attempt_started)
            if self._outage.exceeded():
                raise DatabaseUnreachable(
                    self._outage.describe("sending the heartbeat", error)
                ) from error
            logger.warning(
                "heartbeat for experiment %s failed, will retry: %s", self.experiment_id, error
            )

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, (WriterError, DatabaseUnreachable)):
            raise self._error
        raise WriterError(
            f"storing the measurements failed: {type(self._error).__name__}: {self._error}"
        ) from self._error
