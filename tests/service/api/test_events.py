"""GET /experiments/{id}/events: the event stream of a run (both stores). A running run's
stream sends its state and the points stored after the cursor, each event's id the last
step sent; Last-Event-ID resumes after it; a finished run's stream sends its last state and
closes; a stream is bounded in time (events_max_stream_s, 1 s in these tests)."""

from __future__ import annotations

import time

import httpx
import numpy as np
from sqlalchemy.orm import Session

from service import store
from service.client_retry import sse_data
from service.api.main import create_app
from service.config import Settings
from tests.service.api.conftest import MLP, TEST_OWNER, api_client
from tests.service.analysis.synthetic import mlp_run, store_run


def events(response: httpx.Response) -> list[tuple[str, str | None, str]]:
    """(event, id, data) of each event in a whole text/event-stream body."""
    found, event, event_id, data = [], None, None, []
    for line in [*response.text.split("\n"), ""]:
        if line == "" and data:
            found.append((event, event_id, "\n".join(data)))
            event, event_id, data = None, None, []
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])
    return found


def running(session: Session, steps: int) -> str:
    record = store.create_experiment(session, name="live", tags=[], spec=MLP, queue="cpu", owner=TEST_OWNER)
    store.claim_experiment(session, record.id, "test")
    step_array = np.arange(steps, dtype=np.int64)
    chunks = [
        store.SeriesChunk("loss", None, -1, step_array, 1.0 / (step_array + 1.0)),
        store.SeriesChunk("grad_mean_abs", "layers.0.weight", 0, step_array, np.full(steps, 1e-3)),
        store.SeriesChunk("grad_mean_abs", "layers.1.weight", 1, step_array, np.full(steps, np.nan)),
    ]
    store.write_chunks(session, record.id, chunks, [], steps)
    return record.id


def test_a_running_experiment_streams_its_state_and_new_points(client: httpx.Client, api_session: Session) -> None:
    experiment_id = running(api_session, 20)
    started = time.monotonic()
    response = client.get(f"/api/v1/experiments/{experiment_id}/events", params={"after_step": 14})
    assert 0.9 <= time.monotonic() - started < 5  # held open until events_max_stream_s
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: 1000\n\n")
    found = events(response)
    kinds = [kind for kind, _, _ in found]
    assert kinds == ["points", "experiment"], kinds
    points = httpx.Response(200, content=found[0][2]).json()
    assert found[0][1] == "19" and points["through"] == 19
    by_series = {(s["metric"], s["layer"]): s for s in points["series"]}
    assert list(by_series) == [("grad_mean_abs", "layers.0.weight"), ("grad_mean_abs", "layers.1.weight"), ("loss", None)]
    assert by_series[("loss", None)]["steps"] == [15, 16, 17, 18, 19]
    assert by_series[("grad_mean_abs", "layers.1.weight")]["values"] == [None] * 5  # NaN is null
    state = httpx.Response(200, content=found[1][2]).json()
    assert state["status"] == "running" and state["progress"]["step"] == 20 and state["id"] == experiment_id


def test_last_event_id_resumes_after_it_and_no_cursor_means_from_now(client: httpx.Client, api_session: Session) -> None:
    experiment_id = running(api_session, 20)
    resumed = events(client.get(f"/api/v1/experiments/{experiment_id}/events", headers={"Last-Event-ID": "17"}))
    points = httpx.Response(200, content=resumed[0][2]).json()
    assert {tuple(s["steps"]) for s in points["series"]} == {(18, 19)}
    thinned = events(client.get(f"/api/v1/experiments/{experiment_id}/events", params={"after_step": -1}))
    assert len(httpx.Response(200, content=thinned[0][2]).json()["series"][0]["steps"]) == 20  # within the bound
    fresh = events(client.get(f"/api/v1/experiments/{experiment_id}/events"))
    assert [kind for kind, _, _ in fresh] == ["experiment"]  # history is what GET /series is for


def test_a_finished_experiment_sends_its_end_and_closes(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"events_max_stream_s": 120.0}))
    with app.state.session_factory() as session:
        experiment_id = store_run(session, mlp_run("sigmoid", n_steps=30))
    with api_client(app) as client:
        started = time.monotonic()
        response = client.get(f"/api/v1/experiments/{experiment_id}/events", params={"after_step": -1})
        assert time.monotonic() - started < 60  # closed by the end, not held to the stream's limit
    found = events(response)
    assert [kind for kind, _, _ in found] == ["points", "experiment"]
    assert found[0][1] == "29"
    assert httpx.Response(200, content=found[1][2]).json()["status"] == "succeeded"
    # The client's wait() follows the same stream to the end.
    states = list(sse_data(response.text.split("\n")))
    assert states[-1]["status"] == "succeeded"


def test_the_stream_needs_a_token_and_its_owner(app, client: httpx.Client, api_session: Session) -> None:
    experiment_id = running(api_session, 5)
    from tests.service.api.conftest import bearer

    assert client.get(f"/api/v1/experiments/{experiment_id}/events", headers={"Authorization": ""}).status_code == 401
    other = client.get(f"/api/v1/experiments/{experiment_id}/events", headers=bearer(app, "someone-else"))
    assert other.status_code == 404
    assert client.get(f"/api/v1/experiments/{experiment_id}/events", params={"after_step": 2**63}).status_code == 422


def test_a_cursor_far_behind_gets_a_thinned_event_with_every_extreme(client: httpx.Client, api_session: Session) -> None:
    experiment_id = running(api_session, 5000)  # loss = 1 / (step + 1): its maximum at step 0
    found = events(client.get(f"/api/v1/experiments/{experiment_id}/events", params={"after_step": -1}))
    loss = next(s for s in httpx.Response(200, content=found[0][2]).json()["series"] if s["metric"] == "loss")
    assert 2 <= len(loss["steps"]) <= 1000  # events_max_points
    assert loss["steps"][0] == 0 and loss["values"][0] == 1.0 and loss["steps"][-1] == 4999
    assert found[0][1] == "4999"  # the cursor is the last step, whatever was thinned
