"""/api/v1/experiments/{id}/profile, /horizon and /summary: the gradient, analysed.

Sync routes: FastAPI runs them in its thread pool, off the event loop, because the
summary reads every point of several series and computes over them with numpy.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from sqlalchemy.orm import Session

from service import store
from service.analysis.diagnosis import DIAGNOSIS_METRICS, DiagnosisInput, diagnose
from service.analysis.downsample import downsample
from service.analysis.horizon import memory_horizons
from service.analysis.profile import depth_profile
from service.analysis.saturation import SATURATING
from service.api.bucket_reads import read_profile
from service.api.deps import CurrentOwner, SessionDep, SettingsDep
from service.api.params import ExperimentId, PerLayerMetric, StepMax, StepMin, max_points_query
from service.api.lookups import (
    check_step_range,
    require_experiment,
    require_series,
)
from service.api.responses import JSONBytesResponse
from service.api.summary_cache import SummaryCache, SummaryInputs
from service.schemas.analysis import HorizonResponse, ProfileResponse, SummaryResponse
from service.schemas.jsoncodec import dumps
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.spec import RECURRENT_MODELS
from service.store.data_version import read_data_version
from service.store.histograms import read_histograms
from service.store.records import ExperimentRecord

router = APIRouter(prefix="/api/v1/experiments", tags=["analysis"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown experiment, metric or layer."},
    422: {"model": ValidationErrorResponse, "description": "Invalid query parameters."},
}
MaxPoints = max_points_query(2, "At most this many steps (rows) in each returned series or matrix.")


def read_for_diagnosis(session: Session, record: ExperimentRecord) -> DiagnosisInput:
    # Every point of every metric the diagnosis reads (its medians need them all), in one
    # concatenated row per series (service/store/whole_series.py).
    series = store.read_whole_series(session, record.id, DIAGNOSIS_METRICS)
    model_type = (record.spec.get("model") or {}).get("type")
    timesteps = store.read_timesteps(session, record.id) if model_type in RECURRENT_MODELS else []
    # Saturation reads only the pre-activation histogram chunks, of the nets that can saturate.
    saturating = model_type == "mlp" and (record.spec.get("model") or {}).get("activation") in SATURATING
    histograms = read_histograms(session, record.id, "act_pre") if saturating else []
    return DiagnosisInput(
        spec=record.spec,
        series=series,
        timesteps=timesteps,
        status=record.status,
        result=record.result,
        name=record.name,
        activation_histograms=histograms,
    )


# --- routes ----------------------------------------------------------------------------


@router.get("/{experiment_id}/profile", response_model=ProfileResponse, responses=ERRORS)
def get_profile(
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    metric: PerLayerMetric = "grad_mean_abs",
    max_points: MaxPoints = 500,
    step_min: StepMin = None,
    step_max: StepMax = None,
) -> JSONBytesResponse:
    """The depth profile: `metric` as a steps × layers matrix, input layer first.

    Above `max_points` steps, rows are means over buckets of consecutive steps, the same
    buckets for every layer; a non-finite value makes its cell null."""
    check_step_range(step_min, step_max)
    record = require_experiment(session, experiment_id, owner)
    # From the chunks' aggregates where the layers share their chunks (they do when one
    # run wrote them); else, or for a metric that does not exist (the 404), every point.
    profile = read_profile(session, record.id, metric, step_min, step_max, max_points)
    if profile is None:
        series = require_series(session, record, metric, None, step_min, step_max, per_layer=True)
        profile = depth_profile(metric, series, max_points)
    return JSONBytesResponse(
        {
            "experiment_id": record.id,
            "metric": profile.metric,
            "layers": profile.layers,
            "positions": profile.positions,
            "steps": profile.steps,
            "values": np.ascontiguousarray(profile.values),
            "downsampled": profile.downsampled,
        }
    )


@router.get("/{experiment_id}/horizon", response_model=HorizonResponse, responses=ERRORS)
def get_horizon(
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    settings: SettingsDep,
    max_points: MaxPoints = 1000,
    threshold: Annotated[
        float | None, Query(gt=0, lt=1, description="Relative norm; default GRADWATCH_DIAGNOSIS_HORIZON_RELATIVE_NORM.")
    ] = None,
) -> JSONBytesResponse:
    """The memory horizon per recorded step of each recurrent layer: how many timesteps back
    ‖∂L/∂h_t‖ stays at or above `threshold`·‖∂L/∂h_T‖."""
    record = require_experiment(session, experiment_id, owner)
    model_type = (record.spec.get("model") or {}).get("type")
    if model_type not in RECURRENT_MODELS:
        raise HTTPException(
            status_code=404,
            detail=f"experiment {experiment_id} is an {model_type} model: the memory horizon is "
            "measured for rnn, lstm and gru only",
        )
    threshold = threshold if threshold is not None else settings.diagnosis.horizon_relative_norm
    layers = []
    for layer in memory_horizons(store.read_timesteps(session, experiment_id), threshold):
        steps, _ = downsample(layer.steps, layer.horizon, max_points, "minmax")
        rows = np.searchsorted(layer.steps, steps)
        layers.append(
            {
                "layer_index": layer.layer_index,
                "max_horizon": layer.max_horizon,
                "steps": np.ascontiguousarray(steps),
                "horizon": layer.horizon[rows],
                "reaches_start": layer.reaches_start[rows],
                "first_to_last": layer.first_to_last[rows],
            }
        )
    return JSONBytesResponse({"experiment_id": record.id, "threshold": threshold, "layers": layers})


@router.get("/{experiment_id}/summary", response_model=SummaryResponse, responses=ERRORS)
def get_summary(
    request: Request,
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    settings: SettingsDep,
    max_points: MaxPoints = 500,
) -> Response:
    """The diagnosis: per-layer medians, the first-to-last layer ratio and the decay per
    layer, the gradient norm before and after clipping, non-finite steps, the memory
    horizon of recurrent models, the final losses against the task's trivial baseline, and
    a verdict (`vanishing`, `exploding`, `not_learning`, `healthy`, or `no_data` when
    nothing was recorded) with a one-sentence headline, its evidence, the thresholds it
    used, and the literature's remedies.

    Served from the process's cache while the experiment's row and stored chunks are
    unchanged (service/api/summary_cache.py): the same bytes, one count query."""
    record = require_experiment(session, experiment_id, owner)
    # The counts first, the data after: the data read then holds at least what was
    # counted, so a body never lacks a chunk its key counts; one that holds a chunk more
    # (written in between) is kept under counts that no later read will match again.
    inputs = SummaryInputs.of(record, read_data_version(session, record.id))
    cache: SummaryCache = request.app.state.summary_cache
    body = cache.get(record.id, max_points, inputs)
    if body is None:
        diagnosis = diagnose(read_for_diagnosis(session, record), settings.diagnosis, max_points)
        body = dumps({"experiment_id": record.id, "name": record.name, "status": record.status, **diagnosis.__dict__})
        cache.put(record.id, max_points, inputs, body)
    return Response(body, media_type=JSONBytesResponse.media_type)
