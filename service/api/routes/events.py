"""/api/v1/experiments/{id}/events: a Server-Sent Events stream of a run's status,
progress and newly stored points, for the dashboard's live view and `wait()`.

Events (WHATWG HTML §9.2, text/event-stream):
- `experiment`: the experiment as `GET /experiments/{id}` returns it, sent first and again
  whenever its status, progress, cancel flag or error changes;
- `points`: `{"through": step, "series": [{"metric", "layer", "steps", "values"}]}`, every
  series' points stored after the previous event's step (non-finite values null; past
  `events_max_points` per series, thinned with their extremes kept);
- `timesteps` (only with `?timesteps=true`, recurrent runs): `{"through": step, "layers":
  [{"layer_index", "timesteps", "steps", "hidden_grad_norm"}]}`, the rows of ‖∂L/∂h_t‖
  recorded after the previous such event (past `events_max_points` rows, evenly spaced).
Each event's `id` is the last step of points sent, so a browser that reconnects sends it
back as `Last-Event-ID` and misses nothing. The stream ends after a finished run's last
points and state, and after `events_max_stream_s` in any case (the browser then reconnects).

Streams do not look at the database themselves: one poller per process looks at every
watched experiment at once and fans each event out to its streams
(service/api/live_feed.py). A stream waits on an asyncio queue, holding no thread and no
database connection; it reads the database itself once, when it joins with a cursor
behind its feed's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import CurrentOwner, SessionDep, SettingsDep
from service.api.live_feed import (
    LiveFeeds,
    Subscription,
    catch_up,
    is_recurrent,
    last_step,
    parts_after,
    points_parts,
    timesteps_parts,
)
from service.api.lookups import require_experiment
from service.api.params import ExperimentId
from service.config import Settings
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.jsoncodec import dumps
from service.schemas.limits import INT64_MAX
from service.store.live import points_after, timesteps_after_each
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


def _missed(
    app_state: Any, record: ExperimentRecord, after: int, joined: Subscription, timesteps: bool, max_points: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the feed published before this stream joined: points in (after, joined.through]
    and, when asked for, rows through time in (after, joined.timesteps_through]."""
    points: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    with app_state.session_factory() as session:
        if after < joined.through:
            if joined.through - after > max_points:  # a late reconnect: from the chunks' representatives
                found = catch_up(session, record.id, after, joined.through, max_points)
            else:
                found = points_after(session, record.id, after)
            until = [replace(item, steps=item.steps[keep], values=item.values[keep])
                     for item in found if np.any(keep := item.steps <= joined.through)]  # fmt: skip
            points = points_parts(until, max_points)
        if timesteps and is_recurrent(record) and after < joined.timesteps_through:
            found_rows = timesteps_after_each(session, {record.id: after}).get(record.id, [])
            until_rows = [replace(item, steps=item.steps[keep], hidden_grad_norm=item.hidden_grad_norm[keep], cell_grad_norm=None)
                          for item in found_rows if np.any(keep := item.steps <= joined.timesteps_through)]  # fmt: skip
            rows = timesteps_parts(until_rows, max_points)
    return points, rows


async def _stream(
    request: Request, settings: Settings, record: ExperimentRecord, cursor: int, timesteps: bool
) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    deadline = time.monotonic() + settings.events_max_stream_s
    feeds: LiveFeeds = request.app.state.live_feeds
    with feeds.subscribe(record, cursor, timesteps) as joined:
        rows_cursor = cursor
        points, rows = await run_in_threadpool(
            _missed, request.app.state, record, cursor, joined, timesteps, settings.events_max_points
        )
        if rows:
            rows_cursor = last_step(rows)
            yield sse("timesteps", dumps({"through": rows_cursor, "layers": rows}), cursor)
        if points:
            cursor = last_step(points)
            yield sse("points", dumps({"through": cursor, "series": points}), cursor)
        # Past the feed's cursors at joining, the feed's messages carry everything.
        cursor, rows_cursor = max(cursor, joined.through), max(rows_cursor, joined.timesteps_through)
        if joined.experiment is not None:
            yield sse("experiment", joined.experiment, cursor)
        last_write = time.monotonic()
        while True:
            now = time.monotonic()
            wait_s = min(deadline - now, settings.events_keepalive_s - (now - last_write))
            try:
                message = await asyncio.wait_for(joined.queue.get(), max(wait_s, 0))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return  # the browser reconnects with Last-Event-ID
                yield b": keep-alive\n\n"
                last_write = time.monotonic()
                continue
            if message.kind in ("end", "failed"):
                return
            if message.kind == "deleted":
                yield sse("deleted", message.payload, cursor)
                return
            if message.kind == "experiment":
                yield sse("experiment", message.payload, cursor)
            elif message.kind == "points" and message.through > cursor:
                payload = message.payload
                if message.after < cursor:  # joined with a cursor inside this message's range
                    payload = dumps({"through": message.through, "series": parts_after(message.parts, cursor)})
                cursor = message.through
                yield sse("points", payload, cursor)
            elif message.kind == "timesteps" and message.through > rows_cursor:
                payload = message.payload
                if message.after < rows_cursor:
                    layers = parts_after(message.parts, rows_cursor, "hidden_grad_norm")
                    payload = dumps({"through": message.through, "layers": layers})
                rows_cursor = message.through
                yield sse("timesteps", payload, cursor)
            last_write = time.monotonic()


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
    timesteps: Annotated[
        bool, Query(description="Also send `timesteps` events: new rows of ‖∂L/∂h_t‖ (recurrent runs).")
    ] = False,
) -> StreamingResponse:
    """Live status, progress and new points of an experiment, until it finishes."""
    record = require_experiment(session, experiment_id, owner)
    session.close()  # the stream looks with sessions of its own; hold no connection meanwhile
    cursor = last_event_id if last_event_id is not None else after_step
    if cursor is None:
        cursor = record.progress_step  # from now: what is stored up to the progress is history
    return StreamingResponse(
        _stream(request, settings, record, cursor, timesteps),
        media_type="text/event-stream",
        # no-transform: proxies must not buffer or compress the stream
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )
