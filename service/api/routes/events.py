"""/api/v1/experiments/{id}/events: a Server-Sent Events stream of a run's status,
progress and newly stored points, for the dashboard's live view and `wait()`.

Events (WHATWG HTML §9.2, text/event-stream):
- `experiment`: the experiment as `GET /experiments/{id}` returns it, sent first and again
  whenever its status, progress, cancel flag or error changes;
- `points`: `{"through": step, "series": [{"metric", "layer", "steps", "values"}]}`, every
  series' points stored after the previous event's step (non-finite values null; past
  `events_max_points` per series, thinned with their extremes kept).
Each event's `id` is the last step sent, so a browser that reconnects sends it back as
`Last-Event-ID` and misses nothing. The stream ends after a finished run's last points
and state, and after `events_max_stream_s` in any case (the browser then reconnects).

The stream holds no database connection between looks: each look (every `events_poll_s`)
takes a session of its own in the thread pool, reads the experiment row, and reads points
only when the run's progress moved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service import store
from service.analysis.downsample import downsample
from service.api.deps import CurrentOwner, SessionDep, SettingsDep
from service.api.lookups import require_experiment
from service.api.params import ExperimentId
from service.config import Settings
from service.db.models import FINISHED_STATUSES
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.experiments import ExperimentPublic
from service.schemas.jsoncodec import dumps
from service.schemas.limits import INT64_MAX
from service.store.live import NewPoints, points_after
from service.store.records import ExperimentRecord

router = APIRouter(prefix="/api/v1/experiments", tags=["events"])

RECONNECT_MS = 1000  # the browser's reconnection delay (`retry:`), so a gap stays under 1 s
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The event stream (text/event-stream): `experiment` and `points` events.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    404: {"model": ErrorResponse, "description": "No experiment has this id."},
    422: {"model": ValidationErrorResponse, "description": "Invalid query or header."},
}


def sse(event: str, data: bytes, event_id: int | None = None) -> bytes:
    head = f"event: {event}\n" + ("" if event_id is None else f"id: {event_id}\n")
    return head.encode() + b"data: " + data + b"\n\n"  # orjson never writes a newline


def _state(record: ExperimentRecord, attempts: list[Any]) -> tuple[Any, ...]:
    ended = [attempt.ending for attempt in attempts]
    return (record.status, record.progress_step, record.progress_total, record.cancel_requested, record.error, ended)


def _look(app_state: Any, experiment_id: str, owner: str | None) -> tuple[ExperimentRecord | None, list[Any]]:
    """The experiment and its attempts: an `experiment` event says what GET /experiments/{id} says."""
    with app_state.session_factory() as session:
        record = store.get_experiment(session, experiment_id, owner)
        attempts = [] if record is None else store.list_attempts(session, experiment_id)
        session.commit()
        return record, attempts


def _catch_up(session: Any, experiment_id: str, after_step: int, max_points: int) -> list[Any]:
    """Every series after `after_step`, read as GET /series reads a thinned view: from each
    chunk's stored representatives, a few bytes a chunk, however far behind the cursor is."""
    found = []
    for metric in store.list_metrics(session, experiment_id):
        for item in store.read_series(session, experiment_id, metric, step_min=after_step + 1, minmax_points=max_points):
            found.append(NewPoints(metric, item.layer, item.position, item.steps, item.values))
    return found


def _new_points(
    app_state: Any, experiment_id: str, after_step: int, max_points: int, behind: int
) -> tuple[int, bytes | None]:
    with app_state.session_factory() as session:
        # Far behind (a page that took long to load, a late reconnect): decoding every
        # chunk since the cursor would cost as much as the run's history.
        if behind > max_points:
            found = _catch_up(session, experiment_id, after_step, max_points)
        else:
            found = points_after(session, experiment_id, after_step)
        found = [item for item in found if len(item.steps)]
    if not found:
        return after_step, None
    through = max(int(item.steps[-1]) for item in found)
    # A cursor far behind (a page that took long to load, a late reconnect) would make one
    # huge event: past max_points a series comes thinned as GET /series thins it (M4,
    # every extreme at its exact step), so an event stays small whatever the gap.
    series = []
    for item in found:
        steps, values = downsample(item.steps, item.values, max_points, "minmax")
        series.append({"metric": item.metric, "layer": item.layer, "steps": steps, "values": values})
    return through, dumps({"through": through, "series": series})


async def _stream(
    request: Request, settings: Settings, experiment_id: str, owner: str | None, cursor: int
) -> AsyncIterator[bytes]:
    state = request.app.state
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    deadline = time.monotonic() + settings.events_max_stream_s
    sent_state: tuple[Any, ...] | None = None
    looked_at_progress: int | None = None
    last_write = time.monotonic()
    while True:
        record, attempts = await run_in_threadpool(_look, state, experiment_id, owner)
        if record is None:  # deleted while watched
            yield sse("deleted", dumps({"id": experiment_id}), cursor)
            return
        finished = record.status in FINISHED_STATUSES
        # Points are written with the progress in one transaction (store.write_chunks), so
        # an unchanged progress means nothing new to read; a finished run is read once more
        # because its last flush precedes its final status.
        if record.progress_step != looked_at_progress or finished:
            cursor, payload = await run_in_threadpool(
                _new_points, state, experiment_id, cursor, settings.events_max_points, record.progress_step - cursor
            )
            looked_at_progress = record.progress_step
            if payload is not None:
                yield sse("points", payload, cursor)
                last_write = time.monotonic()
        if _state(record, attempts) != sent_state:
            sent_state = _state(record, attempts)
            yield sse("experiment", dumps(ExperimentPublic.from_record(record, attempts).model_dump(mode="json")), cursor)
            last_write = time.monotonic()
        if finished or time.monotonic() >= deadline:
            return
        if time.monotonic() - last_write >= settings.events_keepalive_s:
            yield b": keep-alive\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(settings.events_poll_s)


@router.get("/{experiment_id}/events", response_class=StreamingResponse, responses=STREAM_RESPONSES)
def experiment_events(
    experiment_id: ExperimentId,
    request: Request,
    session: SessionDep,
    owner: CurrentOwner,
    settings: SettingsDep,
    after_step: Annotated[
        int | None,
        Query(ge=-1, le=INT64_MAX, description="Send points after this step first (-1: all); default: from now."),
    ] = None,
    # Declared as a plain integer (not integer-or-null): a header has no null to send.
    last_event_id: Annotated[
        int,
        Header(ge=-1, le=INT64_MAX, description="Sent by a reconnecting browser: the last event's id (a step)."),
    ] = None,  # type: ignore[assignment]
) -> StreamingResponse:
    """Live status, progress and new points of an experiment, until it finishes."""
    record = require_experiment(session, experiment_id, owner)
    session.close()  # the stream looks with sessions of its own; hold no connection meanwhile
    cursor = last_event_id if last_event_id is not None else after_step
    if cursor is None:
        cursor = record.progress_step  # from now: what is stored up to the progress is history
    return StreamingResponse(
        _stream(request, settings, experiment_id, owner, cursor),
        media_type="text/event-stream",
        # no-transform: proxies must not buffer or compress the stream
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )
