"""PNG pictures: an experiment's metric per layer, its depth profile, its gradient through
time, and a sweep's comparison.

Sync routes, so FastAPI renders them in its thread pool, off the event loop; the
renderers use their own `Figure` objects on an Agg canvas, never pyplot.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from service import store
from service.analysis.downsample import downsample
from service.analysis.horizon import memory_horizons
from service.analysis.profile import depth_profile
from service.api.deps import CurrentOwner, SessionDep, SettingsDep
from service.api.lookups import (
    check_step_range,
    require_experiment,
    require_series,
)
from service.api.params import (
    CompareMetric,
    ExperimentId,
    Layers,
    Metric,
    OneLayer,
    PerLayerMetric,
    StepMax,
    StepMin,
    SweepId,
    max_points_query,
)
from service.api.comparisons import DEFAULT_METRIC, picture_headers
from service.api.routes.sweeps import build_comparison
from service.plots import (
    render_compare,
    render_metric,
    render_profile,
    render_sharpness,
    render_timesteps,
)
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.spec import RECURRENT_MODELS
from service.store.records import SeriesData

experiments_router = APIRouter(prefix="/api/v1/experiments", tags=["plots"])
sweeps_router = APIRouter(prefix="/api/v1/sweeps", tags=["plots"])

PNG = {
    200: {"content": {"image/png": {}}, "description": "A PNG image."},
    404: {"model": ErrorResponse, "description": "Unknown experiment, sweep, metric or layer."},
    422: {"model": ValidationErrorResponse, "description": "Invalid query parameters."},
}
Log = Annotated[
    bool | None,
    Query(description="Log y axis (colour scale for heatmaps); default: on for gradient magnitudes."),
]


def png_response(content: bytes, headers: dict[str, str] | None = None) -> Response:
    # The data behind a picture changes while a run trains: never cache it for long.
    return Response(content=content, media_type="image/png", headers={"Cache-Control": "no-cache", **(headers or {})})


@experiments_router.get("/{experiment_id}/plot.png", response_class=Response, responses=PNG)
def plot_metric(
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    metric: Metric = "grad_mean_abs",
    layer: Layers = None,
    log: Log = None,
    max_points: max_points_query(4, "Points per curve (M4 keeps every extreme).") = 2000,
    step_min: StepMin = None,
    step_max: StepMax = None,
) -> Response:
    """`metric` over training, one curve per layer (input → output), log scale by default
    for gradient magnitudes: the seed's picture."""
    check_step_range(step_min, step_max)
    record = require_experiment(session, experiment_id, owner)
    series = require_series(session, record, metric, layer, step_min, step_max, minmax_points=max_points)
    thinned = [SeriesData(s.layer, s.position, *downsample(s.steps, s.values, max_points, "minmax")) for s in series]
    return png_response(render_metric(thinned, metric, record.name, log))


@experiments_router.get("/{experiment_id}/profile.png", response_class=Response, responses=PNG)
def plot_profile(
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    metric: PerLayerMetric = "grad_mean_abs",
    log: Log = None,
    max_points: max_points_query(2, "Columns of the heatmap.") = 400,
) -> Response:
    """The depth heatmap: training step across, layers up (input at the bottom), log colour."""
    record = require_experiment(session, experiment_id, owner)
    series = require_series(session, record, metric, per_layer=True)
    return png_response(render_profile(depth_profile(metric, series, max_points), record.name, log))


@experiments_router.get("/{experiment_id}/timesteps.png", response_class=Response, responses=PNG)
def plot_timesteps(
    experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner, settings: SettingsDep
) -> Response:
    """‖∂L/∂h_t‖/‖∂L/∂h_T‖ against t at the first and last recorded steps, and the memory
    horizon over training (recurrent models)."""
    record = require_experiment(session, experiment_id, owner)
    model_type = (record.spec.get("model") or {}).get("type")
    if model_type not in RECURRENT_MODELS:
        raise HTTPException(
            status_code=404,
            detail=f"experiment {experiment_id} is an {model_type} model: gradients through time "
            "are recorded for rnn, lstm and gru only",
        )
    threshold = settings.diagnosis.horizon_relative_norm
    data = store.read_timesteps(session, experiment_id)
    return png_response(render_timesteps(data, memory_horizons(data, threshold), record.name, threshold))


@experiments_router.get("/{experiment_id}/sharpness.png", response_class=Response, responses=PNG)
def plot_sharpness(experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner) -> Response:
    """λ_max of the training loss (`hessian_max_eig`, with `logging.curvature_every`) over
    training against SGD's stability limit 2/η (2(1 + β)/η with momentum β), and tr(H)."""
    record = require_experiment(session, experiment_id, owner)
    available = store.list_metrics(session, experiment_id)
    wanted = [m for m in ("hessian_max_eig", "hessian_trace", "lr") if m in available]
    found = {m: store.read_series(session, experiment_id, m)[0] for m in wanted}
    training = record.spec.get("training") or {}
    factor = None
    if training.get("optimizer", "sgd") in ("sgd", "momentum"):
        factor = 2.0 * (1.0 + float(training.get("momentum") or 0.0))
    series = [found.get(m) for m in ("hessian_max_eig", "hessian_trace", "lr")]
    return png_response(render_sharpness(*series, factor, record.name))


@sweeps_router.get("/{sweep_id}/compare.png", response_class=Response, responses=PNG)
def plot_compare(
    sweep_id: SweepId,
    session: SessionDep,
    owner: CurrentOwner,
    metric: CompareMetric = DEFAULT_METRIC,
    layer: OneLayer = None,
    log: Log = None,
    max_points: max_points_query(2, "At most this many steps (bucket means).") = 1000,
) -> Response:
    """Each group of seeds as its mean, with the min–max band over seeds; the y label and
    the `X-Gradwatch-Layer` header name the layer drawn."""
    sweep, comparison = build_comparison(session, sweep_id, owner, metric, layer, max_points)
    return png_response(render_compare(comparison, sweep.name, log), picture_headers(comparison))

