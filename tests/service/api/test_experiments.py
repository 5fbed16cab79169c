"""/api/v1/experiments over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json

import numpy as np
from fastapi import FastAPI
from httpx import Client
from sqlalchemy.orm import Session

from service import store
from service.config import Settings
from service.db.engine import make_engine, make_session_factory
from service.queue import Enqueuer
from tests.service.api.conftest import LSTM, MLP, api_client, queued_messages

API = "/api/v1/experiments"


class _WitnessEnqueuer(Enqueuer):
    """The real enqueuer, which first reads the experiment from a connection of its own:
    what a worker taking the message at once would find."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.seen: list[tuple[str, str | None]] = []

    def enqueue(self, experiment_id: str, queue: str) -> None:
        engine = make_engine(self.settings.resolved_database_url)
        try:
            with make_session_factory(engine)() as session:
                record = store.get_experiment(session, experiment_id)
        finally:
            engine.dispose()
        self.seen.append((experiment_id, None if record is None else record.status))
        super().enqueue(experiment_id, queue)


def test_create_commits_then_enqueues(app: FastAPI, client: Client, settings: Settings) -> None:
    enqueuer = app.state.enqueuer = _WitnessEnqueuer(settings)
    response = client.post(API, json=MLP)
    assert response.status_code == 201, response.text
    body = response.json()
    assert enqueuer.seen == [(body["id"], "queued")], "the row is committed before the message is sent"
    assert body["status"] == "queued" and body["name"] == "sigmoid-2x30" and body["tags"] == ["seed"]
    assert body["progress"] == {"step": 0, "total": 1000}
    assert body["spec"]["model"]["hidden_sizes"] == [30, 30]  # defaults filled in
    assert body["queue"] == "cpu" and body["result"] is None
    assert response.headers["location"] == f"{API}/{body['id']}"
    [message] = queued_messages(settings)
    assert message.name.endswith(".cpu.msg")
    payload = json.loads(message.read_text())
    assert payload["headers"]["task"] == "gradwatch.train"
    assert json.loads(base64.b64decode(payload["body"]))[0] == [body["id"]]

    gpu = client.post(API, json=LSTM).json()
    assert gpu["queue"] == "gpu" and gpu["name"] == "lstm-adding"
    assert client.get(f"{API}/{gpu['id']}").json() == gpu


def test_list_filters_and_pages(client: Client) -> None:
    ids = [client.post(API, json=MLP | {"name": f"run-{i}", "tags": [f"t{i % 2}"]}).json()["id"] for i in range(5)]
    page = client.get(API, params={"limit": 2}).json()
    assert page["total"] == 5 and [e["id"] for e in page["items"]] == ids[:-3:-1]
    assert client.get(API, params={"offset": 4, "limit": 2}).json()["items"][0]["id"] == ids[0]
    assert client.get(API, params={"tag": "t0"}).json()["total"] == 3
    assert [e["id"] for e in client.get(API, params={"name": "run-2"}).json()["items"]] == [ids[2]]
    client.post(f"{API}/{ids[1]}/cancel")
    cancelled = client.get(API, params={"status": "cancelled"}).json()
    assert [e["id"] for e in cancelled["items"]] == [ids[1]]


def test_cancel_and_delete(client: Client, api_session: Session) -> None:
    queued = client.post(API, json=MLP).json()
    cancelled = client.post(f"{API}/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None

    running = client.post(API, json=MLP).json()
    store.claim_experiment(api_session, running["id"], "worker-1")
    store.write_chunks(
        api_session, running["id"], [store.SeriesChunk("loss", None, -1, np.arange(3), np.ones(3))], [], 2
    )
    flagged = client.post(f"{API}/{running['id']}/cancel").json()
    assert flagged["status"] == "running" and flagged["cancel_requested"] is True

    conflict = client.delete(f"{API}/{running['id']}")
    assert conflict.status_code == 409 and "cancel it first" in conflict.json()["detail"]
    store.finish_experiment(api_session, running["id"], "cancelled", {"steps_done": 3})
    assert client.delete(f"{API}/{running['id']}").status_code == 204
    assert client.get(f"{API}/{running['id']}").status_code == 404
    assert client.delete(f"{API}/{running['id']}").status_code == 404


def test_result_with_non_finite_loss_is_null(client: Client, api_session: Session) -> None:
    created = client.post(API, json=MLP).json()
    store.claim_experiment(api_session, created["id"], "w")
    store.finish_experiment(
        api_session, created["id"], "diverged", {"final_loss": float("inf"), "diverged_at_step": 7}
    )
    body = client.get(f"{API}/{created['id']}").json()
    assert body["status"] == "diverged"
    assert body["result"]["final_loss"] is None and body["result"]["diverged_at_step"] == 7


class _DownBroker(Enqueuer):
    def enqueue(self, experiment_id: str, queue: str) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


def test_broker_down_answers_503_and_fails_the_experiment(settings: Settings) -> None:
    from service.api.main import create_app

    app: FastAPI = create_app(settings, enqueuer=_DownBroker(settings))
    with api_client(app) as client:
        response = client.post(API, json=MLP)
        assert response.status_code == 503
        assert "marked failed" in response.json()["detail"]
        [experiment] = client.get(API).json()["items"]
        assert experiment["status"] == "failed" and "broker" in experiment["error"]


def test_real_redis_enqueue_through_the_api(settings: Settings, redis_url: str) -> None:
    import redis

    from service.api.main import create_app

    app = create_app(settings.model_copy(update={"broker_url": redis_url}))
    with api_client(app) as client:
        assert client.post(API, json=LSTM).status_code == 201
    connection = redis.Redis.from_url(redis_url)
    try:
        assert connection.llen("gpu") == 1
    finally:
        connection.close()
