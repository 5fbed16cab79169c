"""/profile, /summary, /horizon and downsampled /series over HTTP, on SQLite and PostgreSQL,
with data written through the store as a worker writes it."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi import FastAPI
from httpx import Client
from sqlalchemy.orm import Session

from service import store
from service.config import Settings
from service.store.records import SeriesChunk
from tests.service.analysis.synthetic import (
    EXPLODING_NORMS,
    RNN_HORIZON,
    SEED_RATIO,
    exploding_run,
    mlp_run,
    recurrent_run,
    store_run,
)
from service.api.main import create_app

API = "/api/v1/experiments"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


def test_a_thousand_steps_asked_for_a_hundred_points_keep_their_extremes(client: Client, api_session: Session) -> None:
    """The issue's must-show: ≤ 100 points per series, each series' global max and min at
    their exact steps, its first and last points."""
    rng = np.random.default_rng(3)
    steps = np.arange(1000, dtype=np.int64)
    layers = ("layers.0.weight", "layers.1.weight", "layers.2.weight")
    values = {layer: np.abs(np.cumsum(rng.standard_normal(1000))) + 1.0 for layer in layers}
    values["layers.1.weight"][777] = 1e6  # one exploding step
    values["layers.2.weight"][123] = 1e-12  # one vanishing step
    values["layers.0.weight"][500] = np.nan  # one non-finite step
    run = mlp_run("relu", n_steps=1000)
    experiment_id = store_run(api_session, run)
    chunks = [
        SeriesChunk("grad_max_abs", layer, position, steps[i : i + 50], values[layer][i : i + 50])
        for position, layer in enumerate(layers)
        for i in range(0, 1000, 50)
    ]
    store.write_chunks(api_session, experiment_id, chunks)

    for agg in ("minmax", "mean", "lttb"):
        response = client.get(f"{API}/{experiment_id}/series", params={"metric": "grad_max_abs", "max_points": 100, "agg": agg})
        assert response.status_code == 200, response.text
        series = response.json()["series"]
        assert [s["layer"] for s in series] == list(layers)
        for one in series:
            raw = values[one["layer"]]
            got = dict(zip(one["steps"], one["values"], strict=True))
            assert len(one["steps"]) <= 100
            assert one["steps"][0] == 0 and one["steps"][-1] == 999
            finite = np.isfinite(raw)
            top, bottom = int(np.flatnonzero(finite)[np.argmax(raw[finite])]), int(np.flatnonzero(finite)[np.argmin(raw[finite])])
            assert got[top] == raw[top] and got[bottom] == raw[bottom], (agg, one["layer"])
        assert dict(zip(series[1]["steps"], series[1]["values"], strict=True))[777] == 1e6
        assert dict(zip(series[2]["steps"], series[2]["values"], strict=True))[123] == 1e-12
        assert dict(zip(series[0]["steps"], series[0]["values"], strict=True))[500] is None  # NaN kept, as null


def test_summary_says_vanishing_for_sigmoid_and_not_for_relu(client: Client, api_session: Session) -> None:
    sigmoid = store_run(api_session, mlp_run("sigmoid"))
    relu = store_run(api_session, mlp_run("relu"))
    body = client.get(f"{API}/{sigmoid}/summary").json()
    assert body["verdict"] == "vanishing" and body["name"] == "sigmoid-2x30"
    finding = next(f for f in body["findings"] if f["kind"] == "vanishing_depth")
    assert finding["evidence"]["first_layer"] == "layers.0.weight" and finding["evidence"]["step"] == 0
    assert finding["evidence"]["ratio"] == pytest.approx(SEED_RATIO["sigmoid"][0])
    assert body["thresholds"]["vanishing_depth_ratio"] == 0.1
    assert body["remedies"][0]["spec_changes"] == {"model.activation": "relu"}
    assert body["depth_ratio"]["at_start"] == pytest.approx(SEED_RATIO["sigmoid"][0])
    assert len(body["depth_ratio"]["per_step"]["steps"]) <= 500
    assert [layer["layer"] for layer in body["layers"]][:2] == ["layers.0", "layers.0.weight"]
    relu_body = client.get(f"{API}/{relu}/summary").json()
    assert relu_body["verdict"] == "healthy"
    assert relu_body["depth_ratio"]["at_start"] == pytest.approx(SEED_RATIO["relu"][0])


def test_summary_says_exploding_without_clipping_and_not_with_it(client: Client, api_session: Session) -> None:
    exploding = store_run(api_session, exploding_run(clipping=False))
    clipped = store_run(api_session, exploding_run(clipping=True))
    body = client.get(f"{API}/{exploding}/summary").json()
    assert body["status"] == "diverged" and body["verdict"] == "exploding"
    assert body["nonfinite"]["first_step"] == 8  # the measured run's first Inf gradient norm
    assert body["grad_norm"]["pre_clip_max"] == pytest.approx(max(n for n in EXPLODING_NORMS if np.isfinite(n)))
    clip = next(r for r in body["remedies"] if r["spec_changes"].get("clipping.mode") == "norm")
    assert "Pascanu" in clip["reference"] and f"{0.5 * EXPLODING_NORMS[0]:.1e}" in clip["action"]
    clipped_body = client.get(f"{API}/{clipped}/summary").json()
    assert clipped_body["verdict"] != "exploding"
    assert clipped_body["grad_norm"]["clipped_steps"] == 300
    assert clipped_body["grad_norm"]["pre_clip_median"] > 1.0
    assert any(f["kind"] == "clipping_controls" for f in clipped_body["findings"])


def test_lstm_has_a_longer_memory_horizon_than_rnn(client: Client, api_session: Session) -> None:
    rnn = store_run(api_session, recurrent_run("rnn"))
    lstm = store_run(api_session, recurrent_run("lstm"))
    rnn_summary = client.get(f"{API}/{rnn}/summary").json()
    lstm_summary = client.get(f"{API}/{lstm}/summary").json()
    assert rnn_summary["verdict"] == "vanishing" and lstm_summary["verdict"] == "healthy"
    assert lstm_summary["horizon"][0]["final"] > rnn_summary["horizon"][0]["final"]
    assert rnn_summary["remedies"][0]["spec_changes"]["model.type"] == "lstm"

    horizon = client.get(f"{API}/{rnn}/horizon", params={"max_points": 20}).json()
    [layer] = horizon["layers"]
    assert horizon["threshold"] == 1e-3 and layer["max_horizon"] == 49
    assert len(layer["steps"]) <= 20 and set(layer["horizon"]) == {float(RNN_HORIZON)}
    assert not any(layer["reaches_start"])
    lstm_horizon = client.get(f"{API}/{lstm}/horizon").json()["layers"][0]
    assert all(lstm_horizon["reaches_start"]) and set(lstm_horizon["horizon"]) == {49.0}
    # A looser threshold lengthens the RNN's horizon.
    assert client.get(f"{API}/{rnn}/horizon", params={"threshold": 1e-6}).json()["layers"][0]["horizon"][0] > 11


def test_profile_is_a_step_by_layer_matrix(client: Client, api_session: Session) -> None:
    experiment_id = store_run(api_session, mlp_run("sigmoid", n_steps=1000))
    body = client.get(f"{API}/{experiment_id}/profile", params={"metric": "grad_mean_abs", "max_points": 100}).json()
    assert body["layers"][0] == "layers.0.weight" and len(body["layers"]) == 6
    assert body["downsampled"] and len(body["steps"]) == 100 == len(body["values"])
    assert all(len(row) == 6 for row in body["values"])
    assert body["steps"][:2] == [0, 10]
    full = client.get(f"{API}/{experiment_id}/profile", params={"metric": "backprop_norm", "max_points": 5000}).json()
    assert not full["downsampled"] and len(full["steps"]) == 1000 and full["layers"] == ["layers.0", "layers.1", "layers.2"]


def test_errors_name_the_problem(client: Client, api_session: Session) -> None:
    experiment_id = store_run(api_session, mlp_run("relu"))
    missing = client.get(f"{API}/nope/summary")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    unknown = client.get(f"{API}/{experiment_id}/profile", params={"metric": "grad_bogus"})
    assert unknown.status_code == 404 and "grad_mean_abs" in unknown.json()["detail"]
    global_metric = client.get(f"{API}/{experiment_id}/profile", params={"metric": "loss"})
    assert global_metric.status_code == 404 and "global" in global_metric.json()["detail"]
    too_many = client.get(f"{API}/{experiment_id}/profile", params={"max_points": 10**9})
    assert too_many.status_code == 422 and "GRADWATCH_LIMIT_MAX_POINTS" in too_many.json()["message"]
    nonsense = client.get(f"{API}/{experiment_id}/summary", params={"max_points": 0})
    assert nonsense.status_code == 422 and "max_points" in nonsense.json()["message"]
    not_recurrent = client.get(f"{API}/{experiment_id}/horizon")
    assert not_recurrent.status_code == 404 and "rnn, lstm and gru" in not_recurrent.json()["detail"]


def test_a_queued_experiments_summary_is_no_data(client: Client) -> None:
    spec = {"name": "queued-lstm", "model": {"type": "lstm"}, "dataset": {"name": "adding"}}
    created = client.post(API, json=spec)
    assert created.status_code == 201, created.text
    body = client.get(f"{API}/{created.json()['id']}/summary").json()
    assert body["status"] == "queued" and body["verdict"] == "no_data"
    assert body["findings"][0]["kind"] == "no_data" and body["headline"].startswith("queued")
    assert body["learning"] is None and body["remedies"] == []
