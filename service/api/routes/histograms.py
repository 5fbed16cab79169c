"""/api/v1/experiments/{id}/histograms and histograms.png: distributions over training.

Recorded with `logging.histogram_every` (workers/engine/histograms.py). Counts are exact
integers; the JSON is rendered by orjson from the arrays (`JSONBytesResponse`).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from service.api.deps import CurrentOwner, SessionDep, SettingsDep
from service.api.lookups import ACTIVE, check_step_range, invalid_query, require_experiment
from service.api.params import ExperimentId, OneLayer, StepMax, StepMin
from service.api.responses import JSONBytesResponse
from service.api.routes.plots import PNG, Log, png_response
from service.plots.histograms import render_histograms
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.histograms import HISTOGRAM_SCALES, HistogramMetric, HistogramsResponse
from service.store.histograms import HistogramData, list_histograms, read_histograms
from service.store.records import ExperimentRecord
from sqlalchemy.orm import Session

router = APIRouter(prefix="/api/v1/experiments", tags=["histograms"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown experiment, or no histograms of that metric or layer."},
    422: {"model": ValidationErrorResponse, "description": "Invalid query parameters."},
}
MetricQuery = Annotated[
    HistogramMetric,
    Query(description="`grad_log10_abs` (per parameter tensor), `act_pre` or `act_out` (per layer)."),
]
LayerQuery = Annotated[
    OneLayer, Query(description="One tensor or layer; default all (JSON) or the input-most one (PNG).")
]


def _require_histograms(
    session: Session, record: ExperimentRecord, metric: str, layer: str | None, step_min: int | None, step_max: int | None
) -> list[HistogramData]:
    available = list_histograms(session, record.id)
    if metric not in available:
        if record.status in ACTIVE:
            return []  # nothing flushed yet
        hint = "" if available else "; set logging.histogram_every to record them"
        raise HTTPException(
            status_code=404,
            detail=f"experiment {record.id} has no {metric} histograms; it has: "
            f"{', '.join(available) or 'none'}{hint}",
        )
    if layer is not None and layer not in available[metric]:
        raise HTTPException(
            status_code=404,
            detail=f"{metric} of experiment {record.id} has no layer {layer!r}; its layers are: "
            f"{', '.join(available[metric])}",
        )
    found = read_histograms(session, record.id, metric, layer)
    if step_min is None and step_max is None:
        return found
    low, high = step_min or 0, np.iinfo(np.int64).max if step_max is None else step_max
    trimmed = []
    for item in found:
        keep = (item.steps >= low) & (item.steps <= high)
        trimmed.append(HistogramData(
            item.metric, item.layer, item.steps[keep], item.edges, item.counts[keep],
            {name: np.ascontiguousarray(column[keep]) for name, column in item.special.items()},
        ))  # fmt: skip
    return trimmed


@router.get("/{experiment_id}/histograms", response_model=HistogramsResponse, responses=ERRORS)
def get_histograms(
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    settings: SettingsDep,
    metric: MetricQuery = "grad_log10_abs",
    layer: LayerQuery = None,
    step_min: StepMin = None,
    step_max: StepMax = None,
) -> JSONBytesResponse:
    """Histograms of one metric over training: step × bin counts per tensor or layer, with
    the bin edges and the exact counts of zeros, out-of-range and non-finite values."""
    check_step_range(step_min, step_max)
    record = require_experiment(session, experiment_id, owner)
    found = _require_histograms(session, record, metric, layer, step_min, step_max)
    cells = sum(item.counts.size for item in found)
    if cells > settings.limits.max_points:
        invalid_query(
            "step_max",
            f"{cells} histogram cells exceed the limit {settings.limits.max_points} (GRADWATCH_LIMIT_MAX_POINTS): "
            "pick one layer, or narrow step_min/step_max",
            "limit_exceeded",
        )
    edges = found[0].edges if found else np.zeros(0)
    return JSONBytesResponse({
        "experiment_id": record.id,
        "metric": metric,
        "scale": HISTOGRAM_SCALES[metric],
        "edges": edges,
        "histograms": [
            {"layer": item.layer, "steps": item.steps, "counts": np.ascontiguousarray(item.counts), **item.special}
            for item in found
        ],
    })  # fmt: skip


@router.get("/{experiment_id}/histograms.png", response_class=Response, responses=PNG)
def plot_histograms(
    experiment_id: ExperimentId,
    session: SessionDep,
    owner: CurrentOwner,
    metric: MetricQuery = "grad_log10_abs",
    layer: LayerQuery = None,
    log: Log = None,
    step_min: StepMin = None,
    step_max: StepMax = None,
) -> Response:
    """A heatmap of one tensor's or layer's histograms: training step across, bin up, the
    colour the fraction of its values in the bin (log scale by default)."""
    check_step_range(step_min, step_max)
    record = require_experiment(session, experiment_id, owner)
    found = _require_histograms(session, record, metric, layer, step_min, step_max)
    return png_response(render_histograms(found[0] if found else None, metric, HISTOGRAM_SCALES[metric], record.name, log))
