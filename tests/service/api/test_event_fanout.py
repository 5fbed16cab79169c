"""The event streams' shared poller (service/api/live_feed.py), on both stores: streams of
one experiment share each look and each query; one look reads every watched experiment at
once; a stream that joins behind its feed reads what it missed once and then follows it.

Every statement the app's engine executes is recorded, so "one query" is counted, not
assumed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from service import store
from service.api.main import create_app
from service.config import Settings
from tests.service.api.conftest import LSTM, TEST_OWNER, api_client
from tests.service.api.test_events import events, running


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings.model_copy(update={"events_max_stream_s": 3.0, "events_poll_s": 0.1}))


@pytest.fixture
def statements(app: FastAPI) -> Iterator[list[str]]:
    """The SQL of every statement the app runs, in order."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001 - SQLAlchemy's hook
        seen.append(" ".join(statement.split()))

    sa.event.listen(app.state.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(app.state.engine, "before_cursor_execute", record)


def _point_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("SELECT") and "FROM series JOIN point_chunks" in s]


def _probes(statements: list[str]) -> list[str]:
    """The poller's narrow look at the watched experiments' rows."""
    return [s for s in statements if s.startswith("SELECT experiments.id, experiments.status, experiments.progress_step")]


def _full_reads(statements: list[str]) -> list[str]:
    """Whole rows, read only for experiments whose row changed."""
    return [s for s in statements if s.startswith("SELECT experiments.id, experiments.name") and "experiments.id IN" in s]


def _once_per_look(reads: list[str], looks: int) -> bool:
    """A look in flight at either end of the window may have its read counted without
    its look, or the reverse: one off at most (per-stream polling would double it)."""
    return looks >= 5 and abs(len(reads) - looks) <= 1


def _append(app: FastAPI, experiment_id: str, first: int, count: int) -> None:
    steps = np.arange(first, first + count, dtype=np.int64)
    with app.state.session_factory() as session:
        store.write_chunks(session, experiment_id, [store.SeriesChunk("loss", None, -1, steps, steps * 0.5)], [], first + count)


def _watch(client: httpx.Client, found: dict[str, list], name: str, experiment_id: str, **params) -> threading.Thread:
    def read() -> None:
        found[name] = events(client.get(f"/api/v1/experiments/{experiment_id}/events", params=params))

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def _until(condition, timeout_s: float = 10) -> None:  # noqa: ANN001 - a predicate
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _settled(feeds) -> None:  # noqa: ANN001 - LiveFeeds
    """Wait for a look that began after every stream joined (the first look reads its
    feeds' points once, whatever moved)."""
    looks = feeds.looks
    _until(lambda: feeds.looks >= looks + 2)


def _points(found: list) -> list[dict]:
    return [httpx.Response(200, content=data).json() for kind, _, data in found if kind == "points"]


def _streams_around(
    app: FastAPI, statements: list[str], streams: dict[str, str], cursor: int, write
) -> tuple[dict[str, list], list[str], int]:  # noqa: ANN001 - write: what a worker writes meanwhile
    """Streams (name → experiment id, all from `cursor`) open while `write` runs: the events
    each got, the statements run from just before the write to 5 looks after it, and
    the number of those looks."""
    feeds = app.state.live_feeds
    with api_client(app) as client:
        found: dict[str, list] = {}
        threads = [_watch(client, found, name, key, after_step=cursor) for name, key in streams.items()]
        _until(lambda: sum(feeds.watchers(key) for key in set(streams.values())) == len(streams))
        _settled(feeds)
        looks_before = feeds.looks
        del statements[:]
        write()
        _until(lambda: feeds.looks >= looks_before + 5)  # the write seen, and looks after it
        during = list(statements)
        looks = feeds.looks - looks_before
        for thread in threads:
            thread.join()
    return found, during, looks


def _loss_steps(found: list) -> list[list[int]]:
    return [s["steps"] for p in _points(found) for s in p["series"] if s["metric"] == "loss"]


def test_two_streams_of_one_experiment_share_one_query_per_look(app: FastAPI, statements: list[str]) -> None:
    with app.state.session_factory() as session:
        experiment_id = running(session, 20)
    found, during, looks = _streams_around(
        app, statements, {"a": experiment_id, "b": experiment_id}, 19, lambda: _append(app, experiment_id, 20, 5)
    )
    # Each look reads the watched experiments' rows once (not once per stream), and the
    # new points once, only in the look that saw the progress move.
    assert _once_per_look(_probes(during), looks), during
    assert len(_full_reads(during)) == 1, during  # the row, when the write changed it
    assert len(_point_reads(during)) == 1, during
    for name in ("a", "b"):
        points = _points(found[name])
        assert [p["through"] for p in points] == [24], found[name]
        assert points[0]["series"][0]["steps"] == [20, 21, 22, 23, 24]
        assert points[0]["series"][0]["values"] == [10.0, 10.5, 11.0, 11.5, 12.0]
    assert found["a"] == found["b"]  # the same bytes, encoded once


def test_one_look_reads_every_watched_experiment_at_once(app: FastAPI, statements: list[str]) -> None:
    with app.state.session_factory() as session:
        first, second = running(session, 10), running(session, 10)
    found, during, looks = _streams_around(
        app, statements, {first: first, second: second}, 9, lambda: (_append(app, first, 10, 3), _append(app, second, 10, 3))
    )
    assert _once_per_look(_probes(during), looks)
    assert all(s.count(",", s.index("IN (")) == 1 for s in _probes(during))  # both ids at once
    assert 1 <= len(_full_reads(during)) <= 2
    assert 1 <= len(_point_reads(during)) <= 2  # both writes in one look, or one look each
    for key in (first, second):
        assert [s["steps"] for p in _points(found[key]) for s in p["series"]] == [[10, 11, 12]], found[key]


def test_a_stream_joining_behind_its_feed_reads_what_it_missed_once(app: FastAPI, statements: list[str]) -> None:
    with app.state.session_factory() as session:
        experiment_id = running(session, 20)
    feeds = app.state.live_feeds
    with api_client(app) as client:
        found: dict[str, list] = {}
        ahead = _watch(client, found, "ahead", experiment_id, after_step=19)
        _until(lambda: feeds.watchers(experiment_id) == 1)
        _append(app, experiment_id, 20, 5)
        _until(lambda: feeds.looks >= 3)  # the feed is now at step 24
        behind = _watch(client, found, "behind", experiment_id, after_step=16)
        _until(lambda: feeds.watchers(experiment_id) == 2)
        _append(app, experiment_id, 25, 2)
        ahead.join()
        behind.join()
    # What the feed had published before it joined (17..24) comes in one event of its
    # own; then the feed's next one.
    assert _loss_steps(found["behind"]) == [list(range(17, 25)), [25, 26]]
    assert _loss_steps(found["ahead"]) == [list(range(20, 25)), [25, 26]]
    assert [kind for kind, _, _ in found["behind"]][:2] == ["points", "experiment"]  # its state without waiting
    assert [event_id for kind, event_id, _ in found["behind"] if kind == "points"] == ["24", "26"]


def _rnn_rows(app: FastAPI, experiment_id: str, first: int, count: int) -> None:
    """Points and ‖∂L/∂h_t‖ rows (T = 4) of steps first..first+count-1, as one flush."""
    steps = np.arange(first, first + count, dtype=np.int64)
    norms = np.outer(steps + 1.0, [0.001, 0.01, 0.1, 1.0])  # row of step s: (s + 1) · 10^(t-3)
    rows = store.TimestepChunk(0, steps, np.arange(4, dtype=np.int64), norms, None)
    with app.state.session_factory() as session:
        store.write_chunks(session, experiment_id, [store.SeriesChunk("loss", None, -1, steps, steps * 0.5)], [rows], first + count)


def test_a_recurrent_run_streams_its_rows_through_time_to_those_who_ask(app: FastAPI) -> None:
    with app.state.session_factory() as session:
        record = store.create_experiment(session, name="rnn", tags=[], spec={**LSTM, "device": "cpu"}, queue="cpu", owner=TEST_OWNER)
        store.claim_experiment(session, record.id, "test")
    _rnn_rows(app, record.id, 0, 10)
    feeds = app.state.live_feeds
    with api_client(app) as client:
        found: dict[str, list] = {}
        asking = _watch(client, found, "asking", record.id, after_step=7, timesteps="true")
        plain = _watch(client, found, "plain", record.id, after_step=7)
        _until(lambda: feeds.watchers(record.id) == 2 and feeds.looks >= 2)
        _rnn_rows(app, record.id, 10, 3)
        asking.join()
        plain.join()
    assert "timesteps" not in [kind for kind, _, _ in found["plain"]]  # the stream as before for others
    rows = [httpx.Response(200, content=data).json() for kind, _, data in found["asking"] if kind == "timesteps"]
    assert [row["through"] for row in rows] == [9, 12]
    layer = rows[1]["layers"][0]
    assert layer["layer_index"] == 0 and layer["timesteps"] == [0, 1, 2, 3] and layer["steps"] == [10, 11, 12]
    assert layer["hidden_grad_norm"][0] == pytest.approx([0.011, 0.11, 1.1, 11.0])
    assert rows[0]["layers"][0]["steps"] == [8, 9]
    # Each timesteps event comes before the points of its flush and keeps the points' id.
    kinds = [(kind, event_id) for kind, event_id, _ in found["asking"] if kind != "experiment"]
    assert kinds == [("timesteps", "7"), ("points", "9"), ("timesteps", "9"), ("points", "12")], kinds
