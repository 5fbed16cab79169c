"""GradwatchClient's DataFrames (the `frames` extra) from a real API: the series with a
step index and a column per layer in depth order, and the whole export as a long table."""

from __future__ import annotations

import math

import pytest

from service.client import GradwatchClient
from tests.service.analysis.synthetic import mlp_run, store_run

pd = pytest.importorskip("pandas")  # in the test extra; skipped only where it is not installed


def test_series_frame_and_export_frame(api) -> None:  # noqa: ANN001
    with api.sessions() as session:
        experiment_id = store_run(session, mlp_run("sigmoid"), owner="cli-user")
    with GradwatchClient(api.url, token=api.token) as client:
        frame = client.series_frame(experiment_id, "grad_mean_abs")
        answer = client.series(experiment_id, "grad_mean_abs")
        loss = client.series_frame(experiment_id, "loss", max_points=50)
        everything = client.export_frame(experiment_id)
    assert list(frame.columns) == [line["layer"] for line in answer["series"]]  # input → output
    assert frame.index.name == "step" and len(frame) == 200 and frame.index.is_monotonic_increasing
    first = answer["series"][0]
    assert math.isclose(frame["layers.0.weight"].iloc[7], first["values"][7])
    # The seed's picture in numbers: the first layer far below the last at step 0.
    assert frame.iloc[0]["layers.0.weight"] < frame.iloc[0]["layers.2.weight"] / 10
    assert list(loss.columns) == ["loss"] and len(loss) <= 50
    assert list(everything.columns) == ["step", "metric", "layer", "timestep", "value"]
    per_metric = everything.groupby("metric").size()
    assert per_metric["grad_mean_abs"] == 200 * len(frame.columns) and per_metric["loss"] == 200
