"""/histograms, /histograms.png and /sharpness.png over HTTP, with what a real engine run
measured written through the worker's own conversion and the real store."""

from __future__ import annotations

import io

import numpy as np
import pytest
from httpx import Client
from matplotlib.image import imread
from sqlalchemy.orm import Session

from service import store
from service.schemas.spec import ExperimentSpec
from tests.service.api.conftest import TEST_OWNER, bearer
from workers.engine import ProbeBatch, train
from workers.spec import to_run_config
from workers.writer import to_chunks, to_histogram_chunks

API = "/api/v1/experiments"
SPEC = {
    "model": {"type": "mlp", "hidden_sizes": [8], "activation": "sigmoid", "init": {"scheme": "normal", "std": 2.0}},
    "dataset": {"name": "digits", "limit": 200},
    "training": {"steps": 12, "full_batch": True, "lr": 0.5, "loss": "mse"},
    "logging": {"flush_every": 4, "histogram_every": 2, "curvature_every": 5, "curvature_iterations": 30, "curvature_batch": 100},
}


@pytest.fixture
def trained(api_session: Session, settings) -> tuple[str, list[ProbeBatch]]:
    """A finished run: the engine's batches stored as the writer stores them."""
    spec = ExperimentSpec.model_validate(SPEC).model_dump(mode="json")
    record = store.create_experiment(api_session, name="hist", tags=[], spec=spec, queue="cpu", owner=TEST_OWNER)
    store.claim_experiment(api_session, record.id, "w")
    batches: list[ProbeBatch] = []
    result = train(to_run_config(spec, settings), batches.append)
    for batch in batches:
        series, timesteps = to_chunks(batch)
        store.write_chunks(api_session, record.id, series, timesteps, int(batch.steps[-1]) + 1, histograms=to_histogram_chunks(batch))
        # A retried batch stores nothing twice.
        store.write_chunks(api_session, record.id, series, timesteps, histograms=to_histogram_chunks(batch))
    store.finish_experiment(api_session, record.id, result.status, {})
    return record.id, batches


def test_histograms_round_trip_exactly(client: Client, trained: tuple[str, list[ProbeBatch]]) -> None:
    experiment_id, batches = trained
    body = client.get(f"{API}/{experiment_id}/histograms", params={"metric": "grad_log10_abs"}).json()
    assert body["metric"] == "grad_log10_abs" and len(body["edges"]) == 129
    assert [h["layer"] for h in body["histograms"]] == ["layers.0.weight", "layers.0.bias", "head.weight", "head.bias"]
    engine = np.concatenate([b.histograms.counts for b in batches if b.histograms is not None])  # (S, K, B+4)
    first = body["histograms"][0]
    assert first["steps"] == [0, 2, 4, 6, 8, 10]
    np.testing.assert_array_equal(np.asarray(first["counts"]), engine[:, 0, 2:-2])
    sizes = np.asarray(first["counts"]).sum(axis=1) + sum(np.asarray(first[c]) for c in ("zero", "below", "above", "nonfinite"))
    assert (sizes == 64 * 8).all()  # every element of layers.0.weight, every step

    one = client.get(f"{API}/{experiment_id}/histograms", params={"metric": "act_out", "layer": "layers.0", "step_min": 3, "step_max": 8})
    assert one.status_code == 200
    [layer] = one.json()["histograms"]
    assert layer["layer"] == "layers.0" and layer["steps"] == [4, 6, 8]
    assert all(sum(row) + z == 200 * 8 for row, z in zip(layer["counts"], layer["zero"]))  # σ(s) ∈ [0, 1]


def test_unknown_layers_metrics_and_limits_are_named(client: Client, trained: tuple[str, list[ProbeBatch]], app) -> None:
    experiment_id, _ = trained
    missing = client.get(f"{API}/{experiment_id}/histograms", params={"metric": "act_pre", "layer": "head"})
    assert missing.status_code == 404 and "layers.0" in missing.json()["detail"]
    assert client.get(f"{API}/{experiment_id}/histograms", params={"metric": "loss"}).status_code == 422
    assert client.get(f"{API}/{experiment_id}/histograms", params={"step_min": 5, "step_max": 1}).status_code == 422
    app.state.settings.limits.max_points = 100
    refused = client.get(f"{API}/{experiment_id}/histograms")
    assert refused.status_code == 422 and "GRADWATCH_LIMIT_MAX_POINTS" in refused.text
    other = client.get(f"{API}/{experiment_id}/histograms", headers=bearer(app, "bob"))
    assert other.status_code == 404 and other.json()["detail"] == f"no experiment with id {experiment_id!r}"


def test_histogram_heatmap_and_sharpness_pictures(client: Client, trained: tuple[str, list[ProbeBatch]]) -> None:
    experiment_id, batches = trained
    for url, params in ((f"{API}/{experiment_id}/histograms.png", {"metric": "act_pre"}), (f"{API}/{experiment_id}/sharpness.png", {})):
        response = client.get(url, params=params)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        picture = imread(io.BytesIO(response.content), format="png")
        assert picture.shape[0] > 300 and picture.std() > 0.05  # drawn, not blank
    series = client.get(f"{API}/{experiment_id}/series", params={"metric": "hessian_max_eig"}).json()["series"][0]
    assert series["steps"] == [0, 5, 10]
    engine = np.concatenate([b.sparse_values[("hessian_max_eig", None)][1] for b in batches if b.sparse_values])
    np.testing.assert_allclose(series["values"], engine)


def test_a_run_without_histograms_says_how_to_get_them(client: Client, api_session: Session) -> None:
    spec = ExperimentSpec.model_validate({**SPEC, "logging": {}}).model_dump(mode="json")
    record = store.create_experiment(api_session, name="plain", tags=[], spec=spec, queue="cpu", owner=TEST_OWNER)
    assert client.get(f"{API}/{record.id}/histograms").json()["histograms"] == []  # queued: nothing yet
    store.claim_experiment(api_session, record.id, "w")
    store.finish_experiment(api_session, record.id, "failed", {})
    response = client.get(f"{API}/{record.id}/histograms")
    assert response.status_code == 404 and "logging.histogram_every" in response.json()["detail"]
    assert client.get(f"{API}/{record.id}/histograms.png").status_code == 404
