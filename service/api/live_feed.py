"""The event streams' shared poller: one per API process, whatever the number of watchers.

Each stream of GET /experiments/{id}/events used to look at the database on its own
every `events_poll_s` (two thread-pool hand-offs and three to five queries a look), so
twenty watchers meant ~300 queries a second competing with every other request. Here one
asyncio task looks at every watched experiment at once (service/store/live.py: three
queries for the states, one for the new points of those whose progress moved, one for
their new gradient-through-time rows), encodes each event once, and hands it to every
stream of that experiment through an asyncio queue. A stream waits on its queue, holding
neither a thread nor a database connection. A stream that joins with a cursor behind the
feed's reads what it missed once, by itself (routes/events.py), then follows the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from starlette.concurrency import run_in_threadpool

from service import store
from service.analysis.downsample import downsample
from service.config import Settings
from service.db.models import FINISHED_STATUSES
from service.schemas.experiments import ExperimentPublic
from service.schemas.jsoncodec import dumps
from service.schemas.spec import RECURRENT_MODELS
from service.store.live import (
    NewPoints,
    RowState,
    Watched,
    points_after_each,
    row_state,
    row_states,
    timesteps_after_each,
    watched_experiments,
)
from service.store.records import ExperimentRecord, TimestepData

log = logging.getLogger("gradwatch.api.events")


@dataclass(frozen=True)
class Message:
    """One event for every stream of an experiment, encoded once.

    `kind`: points | timesteps | experiment | deleted | end (the run finished) | failed (the
    look failed: streams end and browsers reconnect). A points or timesteps message holds
    the steps in (after, through], and `parts` unencoded for a stream whose cursor lies
    inside that range."""

    kind: str
    payload: bytes = b""
    after: int = 0
    through: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Feed:
    through: int  # points published up to this step
    timesteps_through: int  # gradient-through-time rows published up to this step
    recurrent: bool
    queues: dict[asyncio.Queue[Message], bool] = field(default_factory=dict)  # → wants timesteps
    row: RowState | None = None  # the experiment's row at the last look that read it
    state: tuple[Any, ...] | None = None
    experiment: bytes | None = None  # the last `experiment` event's data


@dataclass(frozen=True)
class Subscription:
    queue: asyncio.Queue[Message]
    through: int  # the feed's cursors when this stream joined: it reads up to them itself
    timesteps_through: int
    experiment: bytes | None  # the feed's latest state, None before its first look


class Cursor(NamedTuple):
    """What the poller needs of a feed to look for what is new."""

    through: int
    timesteps_through: int
    row: RowState | None
    recurrent: bool


@dataclass(frozen=True)
class Look:
    present: set[str]  # the watched experiments that still exist
    watched: dict[str, Watched]  # those whose row changed, read in full
    points: dict[str, list[NewPoints]]
    timesteps: dict[str, list[TimestepData]]


def is_recurrent(record: ExperimentRecord) -> bool:
    return (record.spec.get("model") or {}).get("type") in RECURRENT_MODELS


def state_of(watched: Watched) -> tuple[Any, ...]:
    """What an `experiment` event is sent again for (not the heartbeat)."""
    record = watched.record
    ended = [attempt.ending for attempt in watched.attempts]
    return (record.status, record.progress_step, record.progress_total, record.cancel_requested, record.error, ended)


def experiment_event(watched: Watched) -> bytes:
    return dumps(ExperimentPublic.from_record(watched.record, watched.attempts).model_dump(mode="json"))


def points_parts(found: list[NewPoints], max_points: int) -> list[dict[str, Any]]:
    """Past `max_points` a series comes thinned as GET /series thins it (M4, every extreme
    at its exact step), so an event stays small whatever gap it covers."""
    parts = []
    for item in found:
        steps, values = downsample(item.steps, item.values, max_points, "minmax")
        parts.append({"metric": item.metric, "layer": item.layer, "steps": steps, "values": values})
    return parts


def timesteps_parts(found: list[TimestepData], max_rows: int) -> list[dict[str, Any]]:
    """One part per recurrent layer: its new rows (training steps) of ‖∂L/∂h_t‖; past
    `max_rows`, evenly spaced rows with the last one kept."""
    parts = []
    for item in found:
        rows = np.arange(len(item.steps))
        if len(rows) > max_rows:
            rows = np.unique(np.linspace(0, len(rows) - 1, max_rows).round().astype(np.int64))
        parts.append({"layer_index": item.layer_index, "timesteps": item.timesteps,
                      "steps": item.steps[rows], "hidden_grad_norm": item.hidden_grad_norm[rows]})  # fmt: skip
    return parts


def last_step(parts: list[dict[str, Any]]) -> int:
    return max(int(part["steps"][-1]) for part in parts)


def parts_after(parts: list[dict[str, Any]], after: int, matrix: str | None = None) -> list[dict[str, Any]]:
    """`parts` cut to the steps past `after` (and `matrix`'s rows with them); empty ones dropped."""
    cut = []
    for part in parts:
        keep = np.asarray(part["steps"]) > after
        if np.any(keep):
            columns = [matrix] if matrix else ["values"]
            cut.append({**part, "steps": np.asarray(part["steps"])[keep],
                        **{name: np.asarray(part[name])[keep] for name in columns}})  # fmt: skip
    return cut


class LiveFeeds:
    """The feeds of every watched experiment of this process, and the task that polls them."""

    def __init__(self, session_factory: Any, settings: Settings) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self._feeds: dict[str, Feed] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.looks = 0  # how many times the poller looked (the fan-out tests read it)
        # Held by a look in the thread pool, which outlives its task's cancellation: close()
        # waits for it rather than let the engine be disposed under it.
        self._looking = threading.Lock()

    @contextlib.contextmanager
    def subscribe(self, record: ExperimentRecord, cursor: int, timesteps: bool = False) -> Iterator[Subscription]:
        """Follow `record`'s experiment from `cursor` on, until the block exits."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests start one per client): start afresh
            self._loop, self._feeds, self._task = loop, {}, None
        feed = self._feeds.get(record.id)
        if feed is None:
            feed = self._feeds[record.id] = Feed(cursor, cursor, is_recurrent(record))
        queue: asyncio.Queue[Message] = asyncio.Queue()
        feed.queues[queue] = timesteps
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._poll_forever())
        try:
            yield Subscription(queue, feed.through, feed.timesteps_through, feed.experiment)
        finally:
            feed.queues.pop(queue, None)
            if not feed.queues and self._feeds.get(record.id) is feed:
                del self._feeds[record.id]

    def watchers(self, experiment_id: str) -> int:
        """How many streams follow this experiment now."""
        feed = self._feeds.get(experiment_id)
        return 0 if feed is None else len(feed.queues)

    async def close(self) -> None:
        if self._task is not None and not self._task.done() and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await run_in_threadpool(self._wait_for_look)

    def _wait_for_look(self) -> None:
        with self._looking:
            pass

    async def _poll_forever(self) -> None:
        while self._feeds:
            cursors = {key: Cursor(feed.through, feed.timesteps_through, feed.row, feed.recurrent)
                       for key, feed in self._feeds.items()}  # fmt: skip
            try:
                look = await run_in_threadpool(self._look, cursors)
            except Exception:  # noqa: BLE001 - a database outage ends the streams, not the process
                log.exception("looking at the watched experiments failed; their streams end and reconnect")
                for key in list(self._feeds):
                    self._publish(key, Message("failed"))
                    self._feeds.pop(key, None)
                continue
            self.looks += 1
            for key in cursors:
                if key in self._feeds:
                    self._deliver(key, self._feeds[key], look)
            await asyncio.sleep(self._settings.events_poll_s)

    def _look(self, cursors: dict[str, Cursor]) -> Look:
        max_points = self._settings.events_max_points
        with self._looking, self._session_factory() as session:
            # A narrow probe first: the experiments whose row did not change since the last
            # look (a run between flushes, a queued one) cost one index lookup each.
            rows = row_states(session, list(cursors))
            watched = watched_experiments(session, [key for key, row in rows.items() if row != cursors[key].row])
            # Points are written with the progress in one transaction (store.write_chunks),
            # so an unchanged progress means nothing new to read; a finished run is read
            # once more because its last flush precedes its final status.
            moved = {
                key: cursors[key]
                for key, seen in watched.items()
                if cursors[key].row is None
                or seen.record.progress_step != cursors[key].row[1]
                or seen.record.status in FINISHED_STATUSES
            }
            # Far behind (a first stream that asked for all): decoding every chunk since
            # the cursor would cost as much as the run's history.
            behind = {key for key, cursor in moved.items() if watched[key].record.progress_step - cursor.through > max_points}
            points = points_after_each(session, {key: c.through for key, c in moved.items() if key not in behind})
            for key in behind:
                points[key] = catch_up(session, key, moved[key].through, None, max_points)
            # Read for every recurrent run, asked for or not, so the feed's cursor always
            # says what was read (a stream that asks joins with it).
            timesteps = timesteps_after_each(session, {key: c.timesteps_through for key, c in moved.items() if c.recurrent})
        return Look(set(rows), watched, points, timesteps)

    def _deliver(self, key: str, feed: Feed, look: Look) -> None:
        watched = look.watched.get(key)
        if key not in look.present or (watched is None and feed.row is None):  # deleted while watched
            self._publish(key, Message("deleted", dumps({"id": key})))
            del self._feeds[key]
            return
        if watched is None:  # its row did not change: nothing new
            return
        feed.row = row_state(watched.record)
        max_points = self._settings.events_max_points
        # Rows through time first: a stream cut between the two events resumes from the
        # points' cursor and gets these rows again, rather than never.
        rows = timesteps_parts(look.timesteps.get(key, []), max_points)
        if rows:
            through = last_step(rows)
            self._publish(key, Message("timesteps", dumps({"through": through, "layers": rows}), feed.timesteps_through, through, rows))
            feed.timesteps_through = through
        series = [part for part in points_parts(look.points.get(key, []), max_points) if len(part["steps"])]
        if series:
            through = last_step(series)
            self._publish(key, Message("points", dumps({"through": through, "series": series}), feed.through, through, series))
            feed.through = through
        if state_of(watched) != feed.state:
            feed.state, feed.experiment = state_of(watched), experiment_event(watched)
            self._publish(key, Message("experiment", feed.experiment))
        if watched.record.status in FINISHED_STATUSES:
            self._publish(key, Message("end"))
            del self._feeds[key]

    def _publish(self, key: str, message: Message) -> None:
        for queue, timesteps in self._feeds[key].queues.items():
            if timesteps or message.kind != "timesteps":
                queue.put_nowait(message)


def catch_up(session: Any, experiment_id: str, after: int, through: int | None, max_points: int) -> list[NewPoints]:
    """Every series in (after, through] read as GET /series reads a thinned view: from each
    chunk's stored representatives, a few bytes a chunk, however far behind `after` is."""
    found = []
    for metric in store.list_metrics(session, experiment_id):
        for item in store.read_series(session, experiment_id, metric, step_min=after + 1, step_max=through, minmax_points=max_points):
            found.append(NewPoints(metric, item.layer, item.position, item.steps, item.values))
    return found
