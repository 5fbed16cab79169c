"""The probe writer on real databases (SQLite and PostgreSQL): batches stored once each,
heartbeats, cancellation, retries of transient errors, back-pressure, and errors that
reach the training thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.orm import Session, sessionmaker

from service import store
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from workers.outage import DatabaseUnreachable
from workers.writer import ProbeWriter, WriterError, batch_nbytes, to_chunks

LAYERS = ("layers.0.weight", "layers.0", "layers.1.weight")


@dataclass
class FakeTimesteps:
    steps: np.ndarray
    timesteps: np.ndarray
    hidden_grad_norm: np.ndarray  # (S, L, T')
    cell_grad_norm: np.ndarray | None = None


@dataclass
class FakeBatch:
    """The documented fields of the engine's ProbeBatch (docs/architecture.md)."""

    steps: np.ndarray
    values: dict[tuple[str, str | None], np.ndarray]
    layers: tuple[str, ...] = LAYERS
    timesteps: FakeTimesteps | None = field(default=None)
    sparse_values: dict[tuple[str, str | None], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def make_batch(first: int, count: int, recurrent: bool = False) -> FakeBatch:
    steps = np.arange(first, first + count, dtype=np.int64)
    values = {
        ("loss", None): 1.0 / (steps + 1.0),
        ("grad_mean_abs", "layers.0.weight"): steps * 0.5,
        ("grad_mean_abs", "layers.1.weight"): steps * 2.0,
        ("act_mean", "layers.0"): np.full(count, np.nan),
    }
    through_time = None
    if recurrent:
        hidden = np.arange(count * 2 * 3, dtype=np.float64).reshape(count, 2, 3)  # (S, L, T')
        through_time = FakeTimesteps(steps, np.array([0, 24, 49]), hidden, hidden + 0.5)
    return FakeBatch(steps, values, timesteps=through_time)


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gradwatch.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def experiment_id(sessions: sessionmaker[Session]) -> str:
    with sessions() as session:
        record = store.create_experiment(session, "writer-test", [], {"training": {"steps": 100}}, "cpu")
        assert store.claim_experiment(session, record.id, "test worker") is not None
    return record.id


def read(sessions: sessionmaker[Session], experiment_id: str, metric: str) -> dict[str | None, np.ndarray]:
    with sessions() as session:
        return {s.layer: s.steps for s in store.read_series(session, experiment_id, metric)}


def stored_points(sessions: sessionmaker[Session], experiment_id: str) -> int:
    """Points as stored (no de-duplication on read), to prove none is stored twice."""
    with sessions() as session:
        return session.execute(
            sa.text(
                "SELECT COALESCE(SUM(c.n_points), 0) FROM point_chunks c "
                "JOIN series s ON s.id = c.series_id WHERE s.experiment_id = :id"
            ),
            {"id": experiment_id},
        ).scalar_one()


def test_to_chunks_maps_layers_to_positions_and_splits_recurrent_layers() -> None:
    series, timesteps = to_chunks(make_batch(10, 4, recurrent=True))
    positions = {(c.metric, c.layer): c.position for c in series}
    assert positions == {
        ("loss", None): -1,
        ("grad_mean_abs", "layers.0.weight"): 0,
        ("grad_mean_abs", "layers.1.weight"): 2,
        ("act_mean", "layers.0"): 1,
    }
    assert all(c.steps.dtype == np.int64 and c.values.dtype == np.float64 for c in series)
    assert [t.layer_index for t in timesteps] == [0, 1]
    assert timesteps[1].hidden_grad_norm.shape == (4, 3)
    np.testing.assert_array_equal(timesteps[1].hidden_grad_norm[2], [15.0, 16.0, 17.0])
    np.testing.assert_array_equal(timesteps[1].cell_grad_norm[2], [15.5, 16.5, 17.5])


def test_to_chunks_rejects_a_layer_the_batch_does_not_name() -> None:
    batch = make_batch(0, 2)
    batch.values[("grad_norm", "head.weight")] = np.ones(2)
    with pytest.raises(WriterError, match="head.weight"):
        to_chunks(batch)


def test_batches_are_stored_in_order_with_progress(sessions, experiment_id) -> None:
    with ProbeWriter(experiment_id, sessions, poll_s=0.05) as writer:
        for first in (0, 5, 10):
            writer.on_flush(make_batch(first, 5, recurrent=True))
    loss = read(sessions, experiment_id, "loss")
    np.testing.assert_array_equal(loss[None], np.arange(15))
    grads = read(sessions, experiment_id, "grad_mean_abs")
    assert list(grads) == ["layers.0.weight", "layers.1.weight"]  # input → output
    assert stored_points(sessions, experiment_id) == 4 * 15
    with sessions() as session:
        (through_time_0, through_time_1) = store.read_timesteps(session, experiment_id)
        experiment = store.get_experiment(session, experiment_id)
    np.testing.assert_array_equal(through_time_1.steps, np.arange(15))
    assert through_time_1.hidden_grad_norm.shape == (15, 3)
    assert experiment.progress_step == 15
    assert writer.progress_step == 15


def test_a_batch_written_twice_stores_each_point_once(sessions, experiment_id) -> None:
    batch = make_batch(0, 8)
    with ProbeWriter(experiment_id, sessions, poll_s=0.05) as writer:
        writer.on_flush(batch)
        writer.on_flush(batch)  # a retried flush, or a redelivered task
    assert stored_points(sessions, experiment_id) == 4 * 8


def test_transient_errors_are_retried_without_duplicates(sessions, experiment_id) -> None:
    calls = []

    def flaky_write(session, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            # Fail after the rows went in but before the caller learned of the commit.
            store.write_chunks(session, *args, **kwargs)
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("connection reset"))
        store.write_chunks(session, *args, **kwargs)

    with ProbeWriter(experiment_id, sessions, poll_s=0.05, retry_backoff_s=0.01, write_chunks=flaky_write) as writer:
        writer.on_flush(make_batch(0, 6))
    assert len(calls) == 3
    assert stored_points(sessions, experiment_id) == 4 * 6


def test_a_write_that_keeps_failing_stops_training_and_raises(sessions, experiment_id) -> None:
    def broken_write(session, *args, **kwargs):
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    writer = ProbeWriter(experiment_id, sessions, poll_s=0.05, outage_tolerance_s=0.2, retry_backoff_s=0.01, write_chunks=broken_write)
    writer.start()
    writer.on_flush(make_batch(0, 3))
    deadline = time.monotonic() + 10
    while not writer.should_stop() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.should_stop(), "training must stop once nothing can be stored"
    with pytest.raises(DatabaseUnreachable, match=r"database unreachable for \d+ s while storing steps 0–2 .*server closed the connection"):
        writer.on_flush(make_batch(3, 3))
    with pytest.raises(DatabaseUnreachable):
        writer.close()


def test_a_non_transient_error_fails_at_once(sessions, experiment_id) -> None:
    calls = []

    def buggy_write(session, *args, **kwargs):
        calls.append(1)
        raise ValueError("3 steps but 2 values")

    writer = ProbeWriter(experiment_id, sessions, poll_s=0.05, write_chunks=buggy_write).start()
    writer.on_flush(make_batch(0, 3))
    with pytest.raises(WriterError, match="ValueError: 3 steps but 2 values"):
        writer.close()
    assert calls == [1]


class CountingSessions:
    """The real session factory, counting the sessions the writer opens: with no batch
    to store, each one is a poll (heartbeat and cancel check)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self.opened = 0
        self.changed = threading.Condition()

    def __call__(self) -> Session:
        with self.changed:
            self.opened += 1
            self.changed.notify_all()
        return self._sessions()

    def wait_for(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.opened >= count, timeout=60), f"{self.opened} polls"


def test_cancel_request_reaches_should_stop_within_a_poll(sessions, experiment_id) -> None:
    polls = CountingSessions(sessions)
    with ProbeWriter(experiment_id, polls, poll_s=0.05) as writer:
        polls.wait_for(3)
        assert not writer.should_stop()
        with sessions() as session:
            store.request_cancel(session, experiment_id)
        requested_at = polls.opened
        # The poll under way when the cancel committed may have read before it; the next
        # one must see it. Counted in polls, not seconds: a busy machine only makes them late.
        polls.wait_for(requested_at + 2)
        assert writer.should_stop(), f"still running {polls.opened - requested_at} polls after the cancel"


def test_heartbeat_moves_while_no_batch_arrives(sessions, experiment_id) -> None:
    with sessions() as session:
        claimed_at = store.get_experiment(session, experiment_id).heartbeat_at
    with ProbeWriter(experiment_id, sessions, poll_s=0.05):
        time.sleep(0.3)
    with sessions() as session:
        assert store.get_experiment(session, experiment_id).heartbeat_at > claimed_at


def _waiting_to_put(writer: ProbeWriter) -> bool:
    """A thread is waiting in `on_flush` for room in the full buffer (CPython's Condition
    keeps its waiters in `_waiters`; the writer's own thread is inside the stuck write,
    not waiting on it): the deterministic sign of back-pressure."""
    return len(writer._changed._waiters) > 0  # noqa: SLF001


def test_on_flush_does_not_wait_for_the_database(sessions, experiment_id) -> None:
    """Training hands a batch over and goes on; only a full queue makes it wait."""
    writing, release = threading.Event(), threading.Event()

    def slow_write(session, *args, **kwargs):
        writing.set()
        assert release.wait(60), "never released"
        store.write_chunks(session, *args, **kwargs)

    writer = ProbeWriter(
        experiment_id, sessions, poll_s=0.05, max_buffer_bytes=3 * batch_nbytes(make_batch(0, 4)), max_coalesce=1, write_chunks=slow_write
    ).start()
    writer.on_flush(make_batch(0, 4))
    assert writing.wait(60)
    # The database is now stuck on the first batch: two more go on the queue without
    # waiting for it (were on_flush to wait, these calls would hang until the release).
    for first in (4, 8):
        writer.on_flush(make_batch(first, 4))
    assert not release.is_set()
    returned = threading.Event()

    def fourth_flush() -> None:
        writer.on_flush(make_batch(12, 4))
        returned.set()

    blocked = threading.Thread(target=fourth_flush)
    blocked.start()
    while blocked.is_alive() and not (returned.is_set() or _waiting_to_put(writer)):
        time.sleep(0.005)
    assert not returned.is_set(), "a full buffer must push back on training"
    release.set()
    blocked.join(60)
    assert returned.is_set()
    writer.close()
    np.testing.assert_array_equal(read(sessions, experiment_id, "loss")[None], np.arange(16))


def test_a_writer_behind_stores_the_waiting_batches_in_one_transaction(sessions, experiment_id) -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow_write(session, experiment_id, series, *args, **kwargs):
        calls.append(len(series))
        release.wait(10)
        store.write_chunks(session, experiment_id, series, *args, **kwargs)

    writer = ProbeWriter(experiment_id, sessions, poll_s=0.05, write_chunks=slow_write).start()
    writer.on_flush(make_batch(0, 4))
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    for first in (4, 8, 12):  # queued while the first write waits on the database
        writer.on_flush(make_batch(first, 4))
    release.set()
    writer.close()
    assert len(calls) == 2, calls
    assert calls[1] == 3 * calls[0], "the three waiting flushes go in one write"
    np.testing.assert_array_equal(read(sessions, experiment_id, "loss")[None], np.arange(16))


def test_training_stops_once_the_reaper_has_failed_the_run(sessions, experiment_id) -> None:
    with ProbeWriter(experiment_id, sessions, poll_s=0.05) as writer:
        time.sleep(0.1)
        assert not writer.should_stop()
        with sessions() as session:
            # What the reaper does when this worker was silent for longer than
            # heartbeat_stale_s (a long database outage, a stalled host).
            reaped = store.finish_experiment(session, experiment_id, "failed", None, "worker lost")
            assert reaped is not None
        deadline = time.monotonic() + 5
        while not writer.should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.should_stop()
    with sessions() as session:
        assert store.get_experiment(session, experiment_id).status == "failed"
