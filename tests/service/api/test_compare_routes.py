"""/api/v1/compare over HTTP: experiments submitted apart (an RNN and an LSTM, a sigmoid
and a ReLU MLP) on one chart, labelled by what differs, each with its verdict."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import Client
from sqlalchemy.orm import Session

from service.api.main import create_app
from service.config import Settings
from tests.service.analysis.synthetic import mlp_run, recurrent_run, store_run
from tests.service.api.conftest import api_client, bearer

API = "/api/v1/compare"


def test_an_rnn_and_an_lstm_submitted_apart(client: Client, api_session: Session) -> None:
    rnn = store_run(api_session, recurrent_run("rnn"))
    lstm = store_run(api_session, recurrent_run("lstm"))
    response = client.get(API, params={"ids": f"{rnn},{lstm}"})
    assert response.status_code == 200, response.text
    body = response.json()
    # The default metric is loss, as in compare.png; a global metric draws no layer.
    assert body["metric"] == "loss" and body["layer"] is None
    assert [m["experiment_id"] for m in body["members"]] == [rnn, lstm]
    assert "model.type" in body["varying"] and "name" not in body["varying"]
    assert [m["params"]["model.type"] for m in body["members"]] == ["rnn", "lstm"]
    assert all("type=" in m["label"] for m in body["members"])
    assert all(m["layer"] is None and len(m["values"]) == len(body["steps"]) > 0 for m in body["members"])
    verdicts = {m["experiment_id"]: m["summary"]["verdict"] for m in body["members"]}
    # The synthetic RNN's ‖∂L/∂h_t‖ falls below the horizon threshold within the sequence.
    assert verdicts == {rnn: "vanishing", lstm: "healthy"}, body["members"]
    assert "vanishing_time" in body["members"][0]["summary"]["findings"]
    assert body["members"][0]["summary"]["headline"]


def test_per_layer_metric_names_the_layer_each_drew(client: Client, api_session: Session) -> None:
    sigmoid = store_run(api_session, mlp_run("sigmoid"))
    relu = store_run(api_session, mlp_run("relu"))
    ids = f"{sigmoid},{relu}"
    body = client.get(API, params={"ids": ids, "metric": "grad_mean_abs", "max_points": 50}).json()
    assert body["metric"] == "grad_mean_abs" and body["layer"] is None and len(body["steps"]) == 50
    assert [m["layer"] for m in body["members"]] == ["layers.0.weight", "layers.0.weight"]
    assert [m["label"] for m in body["members"]][:1] == ["activation=sigmoid"]
    assert body["members"][0]["values"][0] < body["members"][1]["values"][0] / 2  # sigmoid's first layer far below
    last = client.get(API, params={"ids": ids, "metric": "grad_mean_abs", "layer": "layers.2.weight"}).json()
    assert last["layer"] == "layers.2.weight" and {m["layer"] for m in last["members"]} == {"layers.2.weight"}
    png = client.get(f"{API}.png", params={"ids": ids, "metric": "grad_mean_abs"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert png.headers["x-gradwatch-metric"] == "grad_mean_abs" and png.headers["x-gradwatch-layer"] == "layers.0.weight"
    unknown_layer = client.get(API, params={"ids": ids, "metric": "grad_mean_abs", "layer": "nope"})
    assert unknown_layer.status_code == 404 and "its layers are: layers.0.weight" in unknown_layer.json()["detail"]
    unknown_metric = client.get(API, params={"ids": ids, "metric": "gate_forget"})
    assert unknown_metric.status_code == 404 and "recorded the metric 'gate_forget'" in unknown_metric.json()["detail"]


def test_ids_are_bounded_checked_and_owned(settings: Settings) -> None:
    app: FastAPI = create_app(settings.model_copy(update={"limits": settings.limits.model_copy(update={"max_compare_ids": 2})}))
    document = app.openapi()
    ids = next(p for p in document["paths"][API]["get"]["parameters"] if p["name"] == "ids")
    assert ids["required"] and ids["schema"]["x-max-ids"] == 2  # the serving app's own limit
    with api_client(app, owner="alice") as alice:
        with app.state.session_factory() as session:  # closed before the app disposes its engine
            first = store_run(session, mlp_run("sigmoid"), owner="alice")
            second = store_run(session, mlp_run("relu"), owner="alice")
        assert alice.get(API, params={"ids": f"{first}, {second},{first}"}).status_code == 200  # repeats dropped
        over = alice.get(API, params={"ids": f"{first},{second},x"})
        assert over.status_code == 422 and "above the limit 2" in over.json()["message"]
        assert "MAX_COMPARE_IDS" in over.json()["message"]
        assert alice.get(API, params={"ids": " , "}).status_code == 422
        assert alice.get(API).status_code == 422
        # Another owner's run is unknown, as everywhere: named, and nothing of it shown.
        bob = alice.get(API, params={"ids": f"{first}"}, headers=bearer(app, "bob"))
        assert bob.status_code == 404 and bob.json()["detail"] == f"no experiment with id {first!r}"
        admin = alice.get(API, params={"ids": f"{first},{second}"}, headers=bearer(app, "root", "admin"))
        assert admin.status_code == 200
