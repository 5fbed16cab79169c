"""/metrics, /series and /timesteps over HTTP; data written through the real store."""

from __future__ import annotations

import numpy as np
import pytest
from httpx import Client
from sqlalchemy.orm import Session

from service import store
from tests.service.api.conftest import LSTM, MLP

API = "/api/v1/experiments"
LAYERS = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]


@pytest.fixture
def mlp_id(client: Client, api_session: Session) -> str:
    """A running MLP with 1,000 recorded steps, a spike at step 500 and a NaN at 700."""
    experiment_id = client.post(API, json=MLP).json()["id"]
    store.claim_experiment(api_session, experiment_id, "w")
    for start in range(0, 1000, 100):
        steps = np.arange(start, start + 100)
        loss = 1.0 / (1 + steps)
        loss[steps == 700] = np.nan
        chunks = [store.SeriesChunk("loss", None, -1, steps, loss)]
        for position, layer in enumerate(LAYERS):
            values = (position + 1) * np.ones(100)
            values[steps == 500] = 1e6
            chunks.append(store.SeriesChunk("grad_mean_abs", layer, position, steps, values))
        store.write_chunks(api_session, experiment_id, chunks, [], progress_step=start + 99)
    return experiment_id


def test_metrics(client: Client, mlp_id: str) -> None:
    body = client.get(f"{API}/{mlp_id}/metrics").json()
    assert body == {"metrics": {"grad_mean_abs": LAYERS, "loss": [None]}}
    assert client.get(f"{API}/{mlp_id}").json()["progress"] == {"step": 999, "total": 1000}


def test_series_in_layer_order_with_nulls(client: Client, mlp_id: str) -> None:
    body = client.get(f"{API}/{mlp_id}/series", params={"metric": "grad_mean_abs"}).json()
    assert body["metric"] == "grad_mean_abs"
    assert [s["layer"] for s in body["series"]] == LAYERS
    assert body["series"][0]["steps"] == list(range(1000))
    assert body["series"][2]["values"][500] == 1e6 and body["series"][2]["values"][0] == 3.0

    loss = client.get(f"{API}/{mlp_id}/series", params={"metric": "loss"})
    assert loss.headers["content-type"] == "application/json"
    [series] = loss.json()["series"]
    assert series["layer"] is None and series["values"][700] is None
    assert b"NaN" not in loss.content


def test_layer_selection_and_step_range(client: Client, mlp_id: str) -> None:
    params = {"metric": "grad_mean_abs", "layer": ["layers.2.weight", "layers.0.weight"], "step_min": 10, "step_max": 19}
    body = client.get(f"{API}/{mlp_id}/series", params=params).json()
    assert [s["layer"] for s in body["series"]] == ["layers.0.weight", "layers.2.weight"]
    assert body["series"][0]["steps"] == list(range(10, 20))


def test_max_points(client: Client, mlp_id: str) -> None:
    params = {"metric": "grad_mean_abs", "max_points": 100}
    for series in client.get(f"{API}/{mlp_id}/series", params=params).json()["series"]:
        assert 2 <= len(series["steps"]) <= 100
        assert series["steps"][0] == 0 and series["steps"][-1] == 999
        assert series["steps"] == sorted(series["steps"])
    raw = client.get(f"{API}/{mlp_id}/series", params=params | {"agg": "none"}).json()
    assert len(raw["series"][0]["steps"]) == 1000


def test_unknown_metric_and_layer_name_the_choices(client: Client, mlp_id: str) -> None:
    response = client.get(f"{API}/{mlp_id}/series", params={"metric": "grad_bogus"})
    assert response.status_code == 404
    assert "grad_bogus" in response.json()["detail"] and "grad_mean_abs, loss" in response.json()["detail"]
    response = client.get(f"{API}/{mlp_id}/series", params={"metric": "grad_mean_abs", "layer": "layers.9.weight"})
    assert response.status_code == 404 and "layers.0.weight" in response.json()["detail"]
    response = client.get(f"{API}/{mlp_id}/series", params={"metric": "loss", "layer": "layers.0.weight"})
    assert response.status_code == 404 and "global" in response.json()["detail"]
    # A probe the run has not flushed yet is an empty series while it runs.
    pending = client.get(f"{API}/{mlp_id}/series", params={"metric": "update_ratio"})
    assert pending.status_code == 200 and pending.json() == {"metric": "update_ratio", "series": []}


def test_timesteps(client: Client, api_session: Session) -> None:
    experiment_id = client.post(API, json=LSTM).json()["id"]
    assert client.get(f"{API}/{experiment_id}/timesteps").json()["steps"] == []  # queued
    store.claim_experiment(api_session, experiment_id, "w")
    timesteps = np.array([0, 24, 49])
    hidden = np.array([[1e-5, 1e-2, 1.0], [np.nan, 1e-2, 1.0]])
    chunk = store.TimestepChunk(0, np.array([0, 10]), timesteps, hidden, 2 * hidden)
    store.write_chunks(api_session, experiment_id, [], [chunk], progress_step=10)
    body = client.get(f"{API}/{experiment_id}/timesteps").json()
    assert body["layer"] == 0 and body["layers"] == [0]
    assert body["steps"] == [0, 10] and body["timesteps"] == [0, 24, 49]
    assert body["hidden_grad_norm"] == [[1e-5, 1e-2, 1.0], [None, 1e-2, 1.0]]
    assert body["cell_grad_norm"][0] == [2e-5, 2e-2, 2.0]
    one = client.get(f"{API}/{experiment_id}/timesteps", params={"step": 10}).json()
    assert one["steps"] == [10] and one["hidden_grad_norm"] == [[None, 1e-2, 1.0]]
    assert client.get(f"{API}/{experiment_id}/timesteps", params={"step": 5}).status_code == 404
    missing_layer = client.get(f"{API}/{experiment_id}/timesteps", params={"layer": 3})
    assert missing_layer.status_code == 404 and "layers with data: 0" in missing_layer.json()["detail"]


def test_timesteps_of_an_mlp_is_404(client: Client, mlp_id: str) -> None:
    response = client.get(f"{API}/{mlp_id}/timesteps")
    assert response.status_code == 404 and "rnn, lstm and gru" in response.json()["detail"]


def _kept(series: dict) -> dict[int, float | None]:
    return dict(zip(series["steps"], series["values"], strict=True))


def test_max_points_over_many_chunks_keeps_the_extremes(client: Client, api_session: Session) -> None:
    """Many small chunks: minmax is served from each chunk's representative points, and
    keeps what thinning every point keeps; also with a range that cuts chunks."""
    experiment_id = client.post(API, json=MLP).json()["id"]
    store.claim_experiment(api_session, experiment_id, "w")
    rng = np.random.default_rng(0)
    values = np.exp(np.cumsum(rng.normal(0, 0.05, size=(3000, len(LAYERS))), axis=0))
    values[1234, 0] = 1e6
    values[1235, 0] = np.nan
    values[1510, 1] = np.inf
    values[1511, 1] = -np.inf
    values[2999, 2] = 1e-12
    for start in range(0, 3000, 20):
        steps = np.arange(start, start + 20)
        chunks = [
            store.SeriesChunk("grad_mean_abs", layer, position, steps, values[start : start + 20, position])
            for position, layer in enumerate(LAYERS)
        ]
        store.write_chunks(api_session, experiment_id, chunks, [])
    for step_range in ({}, {"step_min": 1005, "step_max": 2990}):
        params = {"metric": "grad_mean_abs", "max_points": 100} | step_range
        thinned = client.get(f"{API}/{experiment_id}/series", params=params).json()["series"]
        full = client.get(f"{API}/{experiment_id}/series", params=params | {"agg": "none"}).json()["series"]
        for position, (small, whole) in enumerate(zip(thinned, full, strict=True)):
            assert len(small["steps"]) <= 100 and small["steps"] == sorted(set(small["steps"]))
            raw = np.array([np.nan if v is None else v for v in whole["values"]])
            kept = _kept(small)
            finite = np.isfinite(raw)
            must = {0, len(raw) - 1, int(np.flatnonzero(finite)[np.argmax(raw[finite])]),
                    int(np.flatnonzero(finite)[np.argmin(raw[finite])])}  # fmt: skip
            nonfinite = np.flatnonzero(~finite)  # NaN and ±Inf are all null in JSON
            must |= {int(nonfinite[0])} if len(nonfinite) else set()
            for i in must:
                assert whole["steps"][i] in kept, (position, step_range, whole["steps"][i])
                assert kept[whole["steps"][i]] == whole["values"][i]
        if not step_range:
            assert _kept(thinned[0])[1234] == 1e6 and _kept(thinned[0])[1235] is None
            assert _kept(thinned[1])[1510] is None and _kept(thinned[1])[1511] is None
            assert _kept(thinned[2])[2999] == 1e-12
