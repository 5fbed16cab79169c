"""The PNG endpoints return real images that change with the data; the export endpoints
return tables pandas can read; `gradwatch plot` saves the pictures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from httpx import Client
from matplotlib.image import imread
from sqlalchemy.orm import Session

from service.client import GradwatchError
from service.config import Settings
from service.plot_cli import plot_command
from tests.service.analysis.synthetic import exploding_run, mlp_run, recurrent_run, store_run
from service.api.main import create_app

API = "/api/v1/experiments"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


def _image(response) -> np.ndarray:  # noqa: ANN001
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    return imread(io.BytesIO(response.content), format="png")


def test_plots_are_images_that_differ_between_sigmoid_and_relu(client: Client, api_session: Session) -> None:
    sigmoid = store_run(api_session, mlp_run("sigmoid"))
    relu = store_run(api_session, mlp_run("relu"))
    pictures = {}
    for name, experiment_id in (("sigmoid", sigmoid), ("relu", relu)):
        pictures[name] = _image(client.get(f"{API}/{experiment_id}/plot.png", params={"metric": "grad_mean_abs"}))
        _image(client.get(f"{API}/{experiment_id}/profile.png"))
    assert pictures["sigmoid"].shape == pictures["relu"].shape
    assert np.abs(pictures["sigmoid"] - pictures["relu"]).mean() > 1e-3
    one_layer = _image(client.get(f"{API}/{sigmoid}/plot.png", params={"metric": "grad_mean_abs", "layer": "layers.0.weight"}))
    assert np.abs(one_layer - pictures["sigmoid"]).mean() > 1e-3
    linear = _image(client.get(f"{API}/{sigmoid}/plot.png", params={"metric": "grad_mean_abs", "log": "false"}))
    assert np.abs(linear - pictures["sigmoid"]).mean() > 1e-3
    _image(client.get(f"{API}/{sigmoid}/plot.png", params={"metric": "loss"}))


def test_timesteps_png_for_recurrent_models_only(client: Client, api_session: Session) -> None:
    rnn = store_run(api_session, recurrent_run("rnn"))
    lstm = store_run(api_session, recurrent_run("lstm"))
    a, b = _image(client.get(f"{API}/{rnn}/timesteps.png")), _image(client.get(f"{API}/{lstm}/timesteps.png"))
    assert np.abs(a - b).mean() > 1e-3
    mlp = store_run(api_session, mlp_run("relu"))
    refused = client.get(f"{API}/{mlp}/timesteps.png")
    assert refused.status_code == 404 and "rnn, lstm and gru" in refused.json()["detail"]
    assert client.get(f"{API}/{mlp}/plot.png", params={"metric": "nope"}).status_code == 404
    assert client.get(f"{API}/missing/profile.png").status_code == 404


def test_series_csv_and_whole_experiment_export(client: Client, api_session: Session) -> None:
    run = exploding_run(clipping=False)
    experiment_id = store_run(api_session, run)
    csv = client.get(f"{API}/{experiment_id}/series.csv", params={"metric": "grad_norm_total"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    table = pa_csv.read_csv(io.BytesIO(csv.content))
    assert table.column_names == ["step", "layer", "value"]
    values = table.column("value").to_numpy()
    assert np.array_equal(values, run.series["grad_norm_total"][0].values, equal_nan=True)
    assert np.isinf(values[6]) and np.isnan(values[7])  # non-finite kept as measured

    per_layer = pa_csv.read_csv(io.BytesIO(client.get(
        f"{API}/{experiment_id}/series.csv", params={"metric": "grad_mean_abs", "layer": "layers.3.weight"}).content))
    assert set(per_layer.column("layer").to_pylist()) == {"layers.3.weight"}

    parquet = client.get(f"{API}/{experiment_id}/export", params={"format": "parquet"})
    assert parquet.status_code == 200
    whole = pq.read_table(io.BytesIO(parquet.content))
    assert whole.column_names == ["step", "metric", "layer", "timestep", "value"]
    expected_rows = sum(len(s.steps) for series in run.series.values() for s in series)
    assert whole.num_rows == expected_rows
    assert set(whole.column("metric").to_pylist()) == set(run.series)
    as_csv = pa_csv.read_csv(io.BytesIO(client.get(f"{API}/{experiment_id}/export", params={"format": "csv"}).content))
    assert as_csv.num_rows == expected_rows
    assert client.get(f"{API}/{experiment_id}/export", params={"format": "xlsx"}).status_code == 422


def test_export_includes_the_gradient_through_time(client: Client, api_session: Session) -> None:
    run = recurrent_run("lstm", n_steps=10)
    experiment_id = store_run(api_session, run)
    table = pq.read_table(io.BytesIO(client.get(f"{API}/{experiment_id}/export").content))
    rows = table.filter(pa_eq(table, "metric", "cell_grad_norm"))
    assert rows.num_rows == 10 * 50
    assert rows.column("timestep").to_pylist()[:3] == [0, 1, 2]


def pa_eq(table, column: str, value: str):  # noqa: ANN001, ANN201
    import pyarrow.compute as pc

    return pc.equal(table.column(column), value)


def test_plot_command_saves_the_pictures(app: FastAPI, client: Client, api_session: Session, tmp_path: Path) -> None:
    rnn = store_run(api_session, recurrent_run("rnn"))
    transport = client._transport  # the in-process app, as an httpx transport
    token = client.headers["Authorization"].removeprefix("Bearer ")
    written = plot_command(rnn, tmp_path / "out", metric="grad_mean_abs", api_url="http://testserver", transport=transport, token=token)
    assert [p.name for p in written] == [f"{rnn}-grad_mean_abs.png", f"{rnn}-profile-grad_mean_abs.png", f"{rnn}-timesteps.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
    with pytest.raises(GradwatchError, match="no metric 'nope'"):
        plot_command(rnn, tmp_path, metric="nope", api_url="http://testserver", transport=transport, token=token)
