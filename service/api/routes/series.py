"""/api/v1/experiments/{id}/series, /metrics and /timesteps: the recorded probes.

Series are returned as numpy arrays rendered straight to JSON (`JSONBytesResponse`): a
100,000-point series costs one orjson call, not 100,000 pydantic floats.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from service import store
from service.analysis.downsample import downsample
from service.api.params import ExperimentId, Layers, Metric, StepMax, StepMin, max_points_query
from service.schemas.limits import INT64_MAX
from service.api.deps import CurrentOwner, SessionDep, SettingsDep
from service.api.lookups import (
    ACTIVE,
    check_step_range,
    invalid_query,
    require_experiment,
    require_series,
)
from service.api.responses import JSONBytesResponse
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.series import MetricsResponse, SeriesResponse, TimestepsResponse
from service.schemas.spec import RECURRENT_MODELS

router = APIRouter(prefix="/api/v1/experiments", tags=["series"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown experiment, metric, layer or step."},
    422: {"model": ValidationErrorResponse, "description": "Invalid query parameters."},
}


def _choices(values: list[Any]) -> str:
    return ", ".join("null" if v is None else str(v) for v in values) or "none yet"


@router.get("/{experiment_id}/metrics", response_model=MetricsResponse, responses=ERRORS)
def get_metrics(experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner) -> MetricsResponse:
    """Metric names the experiment has recorded, each with its layers (input → output)."""
    require_experiment(session, experiment_id, owner)
    return MetricsResponse(metrics=store.list_metrics(session, experiment_id))


@router.get("/{experiment_id}/series", response_model=SeriesResponse, responses=ERRORS)
def get_series(
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    settings: SettingsDep,
    metric: Metric,
    layer: Layers = None,
    step_min: StepMin = None,
    step_max: StepMax = None,
    max_points: max_points_query(2, "At most this many points per series.") = None,
    agg: Annotated[
        Literal["minmax", "mean", "lttb", "none"],
        Query(description="How max_points thins a series (`none`: never)."),
    ] = "minmax",
) -> JSONBytesResponse:
    """One metric's time series: a series per layer, or one with `layer: null` for a
    global metric. Non-finite values are null.

    `agg=lttb` on a series of many chunks (more than four stored first/last/min/max points
    per requested point) runs LTTB on each chunk's first, last, minimum and maximum points,
    as MinMaxLTTB does; on a shorter one, on every point. Either way the points returned
    are recorded ones, and the global extremes, first and last points are among them."""
    limit = settings.limits.max_points
    check_step_range(step_min, step_max)
    record = require_experiment(session, experiment_id, owner)
    # minmax thinning can run on each chunk's stored representatives instead of every point
    # (service/store/summaries.py).
    minmax_points = max_points if agg == "minmax" else None
    # mean reads each chunk's aggregates (service/api/bucket_reads.py) and LTTB, over many
    # chunks, their representatives (service/api/lttb_reads.py); both come back thinned.
    mean_points = max_points if agg == "mean" else None
    lttb_points = max_points if agg == "lttb" else None
    data = require_series(
        session, record, metric, layer, step_min, step_max,
        minmax_points=minmax_points, mean_points=mean_points, lttb_points=lttb_points,
    )  # fmt: skip
    series = []
    for item in data:
        steps, values = item.steps, item.values
        if agg == "none" or max_points is None:
            if len(steps) > limit:
                invalid_query(
                    "max_points",
                    f"the series of layer {item.layer!r} has {len(steps)} points, above the "
                    f"limit {limit} (max_points): pass max_points, or narrow "
                    "step_min/step_max",
                    "limit_exceeded",
                )
        else:
            steps, values = downsample(steps, values, max_points, agg)
        series.append(
            {
                "layer": item.layer,
                "steps": np.ascontiguousarray(steps),
                "values": np.ascontiguousarray(values),
            }
        )
    return JSONBytesResponse({"metric": metric, "series": series})


@router.get("/{experiment_id}/timesteps", response_model=TimestepsResponse, responses=ERRORS)
def get_timesteps(
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    layer: Annotated[int, Query(ge=0, le=INT64_MAX, description="Recurrent layer index (0 = input side).")] = 0,
    step: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="Only this training step.")] = None,
) -> JSONBytesResponse:
    """‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖ for LSTMs) per recorded training step and timestep."""
    record = require_experiment(session, experiment_id, owner)
    model_type = (record.spec.get("model") or {}).get("type")
    if model_type not in RECURRENT_MODELS:
        raise HTTPException(
            status_code=404,
            detail=f"experiment {experiment_id} is an {model_type} model: gradients through "
            "time are recorded for rnn, lstm and gru only",
        )
    data = store.read_timesteps(session, experiment_id, step=step)
    layers = [item.layer_index for item in data]
    chosen = next((item for item in data if item.layer_index == layer), None)
    if chosen is None:
        if not data and record.status in ACTIVE and step is None:
            return JSONBytesResponse(
                {"layer": layer, "layers": [], "steps": [], "timesteps": [],
                 "hidden_grad_norm": [], "cell_grad_norm": None}
            )  # fmt: skip
        if step is not None and not data:
            raise HTTPException(
                status_code=404, detail=f"step {step} was not recorded for experiment {experiment_id}"
            )
        raise HTTPException(
            status_code=404,
            detail=f"experiment {experiment_id} has no timestep data for layer {layer}; "
            f"layers with data: {_choices(layers)}",
        )
    if step is not None and len(chosen.steps) == 0:
        raise HTTPException(
            status_code=404, detail=f"step {step} was not recorded for experiment {experiment_id}"
        )
    return JSONBytesResponse(
        {
            "layer": layer,
            "layers": layers,
            "steps": chosen.steps,
            "timesteps": chosen.timesteps,
            "hidden_grad_norm": np.ascontiguousarray(chosen.hidden_grad_norm),
            "cell_grad_norm": None
            if chosen.cell_grad_norm is None
            else np.ascontiguousarray(chosen.cell_grad_norm),
        }
    )
