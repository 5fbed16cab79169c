"""The `saturation` finding of /summary, from what a real engine run on MNIST measured,
stored through the worker's own conversion and the real store: a sigmoid (or tanh) net
with large N(0, 1) weights saturates, the same net with Xavier weights and a ReLU net
with the same large weights do not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from httpx import Client
from sqlalchemy.orm import Session

from service import store
from service.config import Settings
from service.schemas.spec import ExperimentSpec
from tests.service.api.conftest import TEST_OWNER
from workers.engine import train
from workers.spec import to_run_config
from workers.writer import to_chunks, to_histogram_chunks

API = "/api/v1/experiments"


def _spec(activation: str, init: dict[str, Any]) -> dict[str, Any]:
    return ExperimentSpec.model_validate({
        "model": {"type": "mlp", "hidden_sizes": [100, 100], "activation": activation, "init": init},
        "dataset": {"name": "mnist", "split": "test", "limit": 1000},
        "training": {"steps": 4, "full_batch": True, "lr": 0.5},
        "logging": {"histogram_every": 1},
    }).model_dump(mode="json")  # fmt: skip


def _trained(session: Session, settings: Settings, data_dir: Path, spec: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """A finished run; returns its id and the engine's own act_saturation per layer at step 0."""
    record = store.create_experiment(session, name=spec["model"]["activation"], tags=[], spec=spec, queue="cpu", owner=TEST_OWNER)
    store.claim_experiment(session, record.id, "w")
    batches: list = []
    config = to_run_config(spec, settings.model_copy(update={"data_dir": data_dir, "allow_download": False}))
    result = train(config, batches.append)
    for batch in batches:
        series, timesteps = to_chunks(batch)
        store.write_chunks(session, record.id, series, timesteps, int(batch.steps[-1]) + 1, histograms=to_histogram_chunks(batch))
    store.finish_experiment(session, record.id, result.status, {})
    probe = {layer: float(values[0]) for (metric, layer), values in batches[0].values.items() if metric == "act_saturation"}
    return record.id, probe


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_large_weights_saturate_a_sigmoid_or_tanh_net_and_not_a_relu_net(
    client: Client, api_session: Session, settings: Settings, mnist_data_dir: Path, activation: str
) -> None:
    large = {"scheme": "normal", "std": 1.0}
    saturating, probe = _trained(api_session, settings, mnist_data_dir, _spec(activation, large))
    summary = client.get(f"{API}/{saturating}/summary").json()
    [finding] = [f for f in summary["findings"] if f["kind"] == "saturation"]
    layers = {one["layer"]: one for one in summary["saturation"]["layers"]}
    assert list(layers) == ["layers.0", "layers.1"]
    for name, layer in layers.items():
        # Counted from the first bin edge beyond the bound, so never above the engine's own
        # probe (same criterion, f' < 0.05 max f'), and below it by at most a bin's worth.
        assert layer["at_start"] <= probe[name] + 1e-9 and probe[name] - layer["at_start"] < 0.05
        assert layer["per_step"]["steps"] == [0, 1, 2, 3]
    assert layers["layers.0"]["at_start"] > 0.55 and "layers.0" in finding["evidence"]["layers"]
    edge = {"sigmoid": 4.375, "tanh": 2.25}[activation]
    assert finding["evidence"]["counting_edge"] == edge and f"|s| ≥ {edge:g}" in finding["message"]
    assert summary["thresholds"]["saturation_derivative"] == 0.05
    assert {r["problem"] for r in summary["remedies"]} >= {"saturation"}
    assert any(r["spec_changes"].get("model.init.scheme") == "xavier_uniform" for r in summary["remedies"])

    # The same net with Xavier weights keeps s in the linear range: measured, not saturated.
    xavier, _ = _trained(api_session, settings, mnist_data_dir, _spec(activation, {"scheme": "xavier_uniform"}))
    calm = client.get(f"{API}/{xavier}/summary").json()
    assert max(one["maximum"] for one in calm["saturation"]["layers"]) < 0.01
    assert not any(f["kind"] == "saturation" for f in calm["findings"])

    # ReLU with the same large weights: f' = 1 for s > 0, nothing to saturate.
    relu, _ = _trained(api_session, settings, mnist_data_dir, _spec("relu", large))
    rectified = client.get(f"{API}/{relu}/summary").json()
    assert rectified["saturation"] is None
    assert not any(f["kind"] == "saturation" for f in rectified["findings"])
    pre = client.get(f"{API}/{relu}/histograms", params={"metric": "act_pre", "layer": "layers.0"}).json()
    # …although its pre-activations are just as large: the histograms were there to read.
    edges, counts = np.asarray(pre["edges"]), np.asarray(pre["histograms"][0]["counts"][0])
    beyond = counts[(edges[:-1] >= 4.375) | (edges[1:] <= -4.375)].sum() + pre["histograms"][0]["above"][0]
    assert beyond / (counts.sum() + pre["histograms"][0]["zero"][0] + pre["histograms"][0]["below"][0]) > 0.4
