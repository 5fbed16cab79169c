"""/api/v1/sweeps over HTTP: create (committed, then enqueued), follow, compare."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import Client
from sqlalchemy.orm import Session

from service import store
from service.config import Limits, Settings
from service.queue import Enqueuer
from tests.service.analysis.synthetic import mlp_run
from service.api.main import create_app
from tests.service.api.conftest import api_client, queued_messages

API = "/api/v1/sweeps"
BASE = {
    "name": "mnist-2x30",
    "model": {"type": "mlp", "hidden_sizes": [30, 30], "init": {"scheme": "xavier_uniform"}},
    "dataset": {"name": "mnist", "limit": 5000},
    "training": {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": 200},
}
GRID = {"model.activation": ["sigmoid", "tanh", "relu"], "training.seed": [0, 1]}


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


def _train(session: Session, sweep: dict) -> None:
    """Do what a worker does for every member: claim, write probe chunks, finish."""
    for member in sweep["members"]:
        activation, seed = member["params"]["model.activation"], member["params"]["training.seed"]
        run = mlp_run(activation, seed=seed)
        store.claim_experiment(session, member["id"], "test-worker")
        store.write_chunks(session, member["id"], run.chunks(), progress_step=199)
        store.finish_experiment(session, member["id"], "succeeded", run.result)


def test_three_activations_by_two_seeds(client: Client, api_session: Session, settings: Settings) -> None:
    response = client.post(API, json={"base": BASE, "grid": GRID})
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert response.headers["location"] == f"{API}/{sweep['id']}"
    assert sweep["size"] == 6 and sweep["status"] == "queued" and sweep["name"] == "mnist-2x30"
    assert sweep["varying"] == ["model.activation", "training.seed"]
    assert [m["label"] for m in sweep["members"]][:3] == [
        "activation=sigmoid seed=0", "activation=sigmoid seed=1", "activation=tanh seed=0"
    ]
    assert len(queued_messages(settings)) == 6  # each member enqueued after the commit
    experiment = client.get(f"/api/v1/experiments/{sweep['members'][5]['id']}").json()
    assert experiment["spec"]["model"]["activation"] == "relu" and experiment["spec"]["training"]["seed"] == 1
    assert experiment["sweep_id"] == sweep["id"] and experiment["name"] == "mnist-2x30 activation=relu seed=1"

    _train(api_session, sweep)
    followed = client.get(f"{API}/{sweep['id']}").json()
    assert followed["status"] == "finished" and followed["status_counts"] == {"succeeded": 6}
    assert all(m["progress"]["step"] == 199 for m in followed["members"])

    compared = client.get(f"{API}/{sweep['id']}/compare", params={"metric": "grad_mean_abs", "max_points": 50})
    assert compared.status_code == 200, compared.text
    body = compared.json()
    assert len(body["members"]) == 6 and len(body["steps"]) == 50
    assert all(len(m["values"]) == 50 and m["layer"] == "layers.0.weight" for m in body["members"])
    assert [g["label"] for g in body["groups"]] == ["activation=sigmoid", "activation=tanh", "activation=relu"]
    for group in body["groups"]:
        assert group["seeds"] == [0, 1]
        assert all(lo <= mean <= hi for lo, mean, hi in zip(group["minimum"], group["mean"], group["maximum"], strict=True))
    # The sigmoid's first layer starts far below the ReLU's: the seed's comparison. Measured
    # at step 0: 3.4e-4 against 1.5e-3; the first 4-step bucket's means, 5.3e-4 and 1.3e-3.
    sigmoid, relu = body["groups"][0], body["groups"][2]
    assert sigmoid["mean"][0] < relu["mean"][0] / 2

    loss = client.get(f"{API}/{sweep['id']}/compare", params={"metric": "loss"}).json()
    assert loss["members"][0]["layer"] is None and len(loss["steps"]) == 200

    png = client.get(f"{API}/{sweep['id']}/compare.png", params={"metric": "grad_mean_abs"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")


def test_above_the_cap_is_422_and_creates_nothing(settings: Settings) -> None:
    capped = settings.model_copy(update={"limits": Limits(max_sweep_size=4)})
    with api_client(create_app(capped)) as client:
        response = client.post(API, json={"base": BASE, "grid": GRID})
        assert response.status_code == 422
        assert "6 experiments" in response.json()["message"] and "max_sweep_size" in response.json()["message"]
        assert client.get("/api/v1/experiments").json()["total"] == 0
    assert queued_messages(settings) == []


def test_an_invalid_member_is_422_naming_it(client: Client) -> None:
    response = client.post(API, json={"base": BASE, "grid": {"model.hidden_sizes": [[30], [99999]]}})
    assert response.status_code == 422
    assert "hidden_sizes=[99999]" in response.json()["message"]
    bad_body = client.post(API, json={"base": BASE, "grid": GRID, "extra": 1})
    assert bad_body.status_code == 422 and "extra" in bad_body.json()["message"]


def test_unknown_sweep_and_metric(client: Client, api_session: Session) -> None:
    assert client.get(f"{API}/nope").status_code == 404
    assert client.get(f"{API}/nope/compare", params={"metric": "loss"}).status_code == 404
    sweep = client.post(API, json={"base": BASE, "grid": {"model.activation": ["relu"]}}).json()
    _train(api_session, {"members": [{**sweep["members"][0], "params": {"model.activation": "relu", "training.seed": 0}}]})
    missing = client.get(f"{API}/{sweep['id']}/compare", params={"metric": "gate_forget"})
    assert missing.status_code == 404 and "gate_forget" in missing.json()["detail"]
    layer = client.get(f"{API}/{sweep['id']}/compare", params={"metric": "grad_mean_abs", "layer": "nope"})
    assert layer.status_code == 404 and "layers.0.weight" in layer.json()["detail"]


def test_broker_failure_marks_members_failed(settings: Settings) -> None:
    class Down(Enqueuer):
        def enqueue(self, experiment_id: str, queue: str) -> None:
            raise ConnectionError("broker down")

    app = create_app(settings)
    app.state.enqueuer = Down(settings)
    with api_client(app) as client:
        response = client.post(API, json={"base": BASE, "grid": {"model.activation": ["relu", "tanh"]}})
        assert response.status_code == 503 and "2 of 2" in response.json()["detail"]
        listed = client.get("/api/v1/experiments").json()
        assert {e["status"] for e in listed["items"]} == {"failed"}


def test_sweeps_list_newest_first_paged_and_owned(app: FastAPI, client: Client, api_session: Session) -> None:
    from tests.service.api.conftest import bearer

    tiny = {**BASE, "dataset": {"name": "digits"}, "training": {"steps": 10}}
    made = [client.post(API, json={"name": f"s{i}", "base": tiny, "grid": {"training.seed": [0, 1]}}).json() for i in range(3)]
    listed = client.get(API).json()
    assert listed["total"] == 3 and [s["id"] for s in listed["items"]] == [s["id"] for s in reversed(made)]
    assert listed["items"][0]["status"] == "queued" and listed["items"][0]["status_counts"] == {"queued": 2}
    assert listed["items"][0]["size"] == 2 and listed["items"][0]["varying"] == ["training.seed"]
    page = client.get(API, params={"offset": 1, "limit": 1}).json()
    assert [s["name"] for s in page["items"]] == ["s1"] and page["total"] == 3
    assert [s["name"] for s in client.get(API, params={"name": "s2"}).json()["items"]] == ["s2"]
    store.request_cancel(api_session, made[0]["members"][0]["id"])
    counts = {s["id"]: s for s in client.get(API).json()["items"]}[made[0]["id"]]
    assert counts["status"] == "running" and counts["status_counts"] == {"cancelled": 1, "queued": 1}
    for huge in (2**63, 2**64):
        assert client.get(API, params={"offset": huge}).status_code == 422
    assert client.get(API, params={"limit": 0}).status_code == 422
    bob = bearer(app, "bob")
    assert client.get(API, headers=bob).json()["total"] == 0
    assert client.get(API, params={"owner": "tester"}, headers=bob).json()["items"] == []
    admin = bearer(app, "root", "admin")
    assert client.get(API, params={"owner": "tester"}, headers=admin).json()["total"] == 3
