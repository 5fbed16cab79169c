"""The PNG endpoints return real images that change with the data; the export endpoints
return tables pandas can read. `gradwatch plot` as a command: tests/e2e/test_embedded.py."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from httpx import Client
from matplotlib.image import imread
from sqlalchemy.orm import Session

from service.config import Settings
from tests.service.analysis.synthetic import SyntheticRun, exploding_run, mlp_run, recurrent_run, store_run
from service.api.main import create_app

API = "/api/v1/experiments"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


def named(run: SyntheticRun, name: str) -> SyntheticRun:
    run.spec["name"] = name
    return run


def _image(response) -> np.ndarray:  # noqa: ANN001
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    return imread(io.BytesIO(response.content), format="png")


def test_plots_are_images_that_differ_between_sigmoid_and_relu(client: Client, api_session: Session) -> None:
    # One name for both: the title is the experiment's name, and the pictures may differ
    # only by what the curves show.
    sigmoid = store_run(api_session, named(mlp_run("sigmoid"), "seed-2x30"))
    relu = store_run(api_session, named(mlp_run("relu"), "seed-2x30"))
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
    rnn = store_run(api_session, named(recurrent_run("rnn"), "adding-50"))
    lstm = store_run(api_session, named(recurrent_run("lstm"), "adding-50"))
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
    assert np.isinf(values[8]) and np.isnan(values[11])  # non-finite kept as measured

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


def _expected_rows(run: SyntheticRun) -> dict[tuple[str, str | None, int, int | None], float]:
    """(metric, layer, step, timestep) → value: every value the run measured."""
    rows = {}
    for metric, series in run.series.items():
        for one in series:
            for step, value in zip(one.steps.tolist(), one.values.tolist(), strict=True):
                rows[(metric, one.layer, step, None)] = value
    for data in run.timesteps:
        for name, matrix in (("hidden_grad_norm", data.hidden_grad_norm), ("cell_grad_norm", data.cell_grad_norm)):
            if matrix is None:
                continue
            for row, step in enumerate(data.steps.tolist()):
                for column, timestep in enumerate(data.timesteps.tolist()):
                    rows[(name, str(data.layer_index), step, timestep)] = float(matrix[row, column])
    return rows


def _exported_rows(table) -> dict[tuple[str, str | None, int, int | None], float]:  # noqa: ANN001
    columns = table.to_pydict()
    rows = {}
    for step, metric, layer, timestep, value in zip(
        columns["step"], columns["metric"], columns["layer"], columns["timestep"], columns["value"], strict=True
    ):
        key = (metric, layer, step, timestep)
        assert key not in rows, f"{key} exported twice"
        rows[key] = value
    return rows


@pytest.mark.parametrize("kind", ["exploding", "lstm"])
def test_export_holds_every_measured_value_in_its_row(client: Client, api_session: Session, kind: str) -> None:
    """Parquet and CSV hold the same rows, and each row is one measured value at its step,
    layer and timestep (non-finite values as measured): compared value by value."""
    run = exploding_run(clipping=False) if kind == "exploding" else recurrent_run("lstm", n_steps=10)
    experiment_id = store_run(api_session, run)
    expected = _expected_rows(run)
    parquet = pq.read_table(io.BytesIO(client.get(f"{API}/{experiment_id}/export", params={"format": "parquet"}).content))
    csv = pa_csv.read_csv(
        io.BytesIO(client.get(f"{API}/{experiment_id}/export", params={"format": "csv"}).content),
        # Only an empty field is missing; `nan` is a value (pyarrow's default reads it as null).
        convert_options=pa_csv.ConvertOptions(column_types=parquet.schema, null_values=[""], strings_can_be_null=True),
    )
    for table in (parquet, csv):
        exported = _exported_rows(table)
        assert exported.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_equal(exported[key], value, err_msg=str(key))
    if kind == "exploding":
        # The global metrics have no layer; the per-layer ones name theirs.
        assert _exported_rows(parquet)[("grad_norm_total", None, 8, None)] == np.inf
        assert np.isnan(_exported_rows(parquet)[("grad_norm_total", None, 11, None)])
        assert ("grad_mean_abs", "layers.3.weight", 0, None) in _exported_rows(parquet)
    else:
        # The gradient through time: layer 0, one row per (step, timestep).
        assert ("cell_grad_norm", "0", 90, 49) in _exported_rows(parquet)
