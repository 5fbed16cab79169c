"""Tables for pandas users: one series as CSV, or the whole experiment as CSV or Parquet.

Long format, one row per measured value: `step, metric, layer, timestep, value`
(`layer` empty for global metrics; `timestep` set only for the recurrent models' gradient
through time, whose `layer` is the recurrent layer's index). Non-finite values stay as
they were measured: `nan`, `inf`, `-inf` in CSV (pandas reads them back), IEEE values in
Parquet. Tables are built with pyarrow, column by column, never row by row in Python.

    pandas.read_parquet("…/export?format=parquet")  # or read_csv("…/export?format=csv")
"""

from __future__ import annotations

import io
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fastapi import APIRouter, Query
from fastapi.responses import Response

from service import store
from service.analysis.downsample import downsample
from service.api.deps import SessionDep
from service.api.lookups import (
    check_step_range,
    require_experiment,
    require_series,
)
from service.api.params import ExperimentId, Layers, Metric, StepMax, StepMin, max_points_query
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.store.records import SeriesData, TimestepData

router = APIRouter(prefix="/api/v1/experiments", tags=["export"])

ERRORS = {
    404: {"model": ErrorResponse, "description": "Unknown experiment, metric or layer."},
    422: {"model": ValidationErrorResponse, "description": "Invalid query parameters."},
}
SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("metric", pa.string()),
        ("layer", pa.string()),
        ("timestep", pa.int64()),
        ("value", pa.float64()),
    ]
)


def _series_table(metric: str, series: list[SeriesData]) -> pa.Table:
    tables = []
    for one in series:
        n = len(one.steps)
        tables.append(
            pa.table(
                {
                    "step": pa.array(one.steps, pa.int64()),
                    "metric": pa.repeat(pa.scalar(metric), n) if n else pa.array([], pa.string()),
                    "layer": pa.nulls(n, pa.string()) if one.layer is None else pa.repeat(pa.scalar(one.layer), n),
                    "timestep": pa.nulls(n, pa.int64()),
                    "value": pa.array(one.values, pa.float64()),
                },
                schema=SCHEMA,
            )
        )
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _timesteps_table(data: list[TimestepData]) -> pa.Table:
    tables = []
    for layer in data:
        s, t = len(layer.steps), len(layer.timesteps)
        for name, matrix in (("hidden_grad_norm", layer.hidden_grad_norm), ("cell_grad_norm", layer.cell_grad_norm)):
            if matrix is None or s == 0:
                continue
            tables.append(
                pa.table(
                    {
                        "step": pa.array(np.repeat(layer.steps, t), pa.int64()),  # row-major (S, T')
                        "metric": pa.repeat(pa.scalar(name), s * t),
                        "layer": pa.repeat(pa.scalar(str(layer.layer_index)), s * t),
                        "timestep": pa.array(np.tile(layer.timesteps, s), pa.int64()),
                        "value": pa.array(np.ascontiguousarray(matrix).ravel(), pa.float64()),
                    },
                    schema=SCHEMA,
                )
            )
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _csv(table: pa.Table, columns: list[str]) -> bytes:
    buffer = io.BytesIO()
    pa_csv.write_csv(table.select(columns), buffer, pa_csv.WriteOptions(quoting_style="needed"))
    return buffer.getvalue()


@router.get(
    "/{experiment_id}/series.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "step,layer,value"}, **ERRORS},
)
def series_csv(
    experiment_id: ExperimentId,
    session: SessionDep,
    metric: Metric,
    layer: Layers = None,
    step_min: StepMin = None,
    step_max: StepMax = None,
    max_points: max_points_query(2, "Thin each series (extremes kept).") = None,
    agg: Annotated[Literal["minmax", "mean", "lttb", "none"], Query()] = "minmax",
) -> Response:
    """One metric as CSV, `step,layer,value`, layers input → output."""
    check_step_range(step_min, step_max)
    record = require_experiment(session, experiment_id)
    series = require_series(session, record, metric, layer, step_min, step_max)
    if max_points is not None:
        series = [SeriesData(s.layer, s.position, *downsample(s.steps, s.values, max_points, agg)) for s in series]
    filename = f"{experiment_id}-{metric}.csv"
    return Response(
        content=_csv(_series_table(metric, series), ["step", "layer", "value"]),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/{experiment_id}/export",
    response_class=Response,
    responses={
        200: {
            "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
            "description": "step,metric,layer,timestep,value",
        },
        **ERRORS,
    },
)
def export(
    experiment_id: ExperimentId,
    session: SessionDep,
    format: Annotated[Literal["csv", "parquet"], Query(description="csv or parquet.")] = "parquet",  # noqa: A002
) -> Response:
    """Every recorded value of the experiment as one long table."""
    record = require_experiment(session, experiment_id)
    tables = [
        _series_table(metric, store.read_series(session, experiment_id, metric))
        for metric in sorted(store.list_metrics(session, experiment_id))
    ]
    tables.append(_timesteps_table(store.read_timesteps(session, experiment_id)))
    table = pa.concat_tables(tables)
    if format == "csv":
        content, media_type = _csv(table, SCHEMA.names), "text/csv"
    else:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        content, media_type = buffer.getvalue(), "application/vnd.apache.parquet"
    filename = f"{record.id}.{format}"
    return Response(
        content=content,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
