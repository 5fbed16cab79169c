"""Lookups shared by the routes that read an experiment's probes (series, analysis, plots,
export): the experiment, the metric and its layers, and the query checks, each failing
with an error that names what exists.
"""

from __future__ import annotations

from typing import NoReturn

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from service import store
from service.api.bucket_reads import read_mean_thinned
from service.api.lttb_reads import read_lttb_thinned
from service.store.records import ExperimentRecord, SeriesData

# The engine's probe names (docs/architecture.md). A run that has not flushed yet answers
# an empty series for these rather than 404.
KNOWN_METRICS = (
    "loss", "accuracy", "grad_norm_total", "grad_norm_total_clipped", "clipped", "lr",
    "grad_norm", "grad_mean_abs", "grad_std", "grad_max_abs", "grad_nonfinite", "weight_norm",
    "update_ratio", "backprop_norm", "act_mean", "act_std", "act_saturation", "act_dead",
    "gate_forget", "gate_input", "gate_output", "gate_reset", "gate_update",
    "gate_forget_saturation", "gate_input_saturation", "gate_output_saturation",
    "gate_reset_saturation", "gate_update_saturation",
)  # fmt: skip
ACTIVE = ("queued", "running")


def invalid_query(name: str, message: str, kind: str = "value_error") -> NoReturn:
    raise RequestValidationError([{"loc": ("query", name), "msg": message, "type": kind}])


def parse_id_list(ids: str, limit: int, limit_name: str) -> list[str]:
    """Comma-separated ids, blanks and repeats dropped, order kept; 422 for none or above `limit`."""
    wanted = list(dict.fromkeys(part.strip() for part in ids.split(",") if part.strip()))
    if not wanted:
        invalid_query("ids", "name at least one experiment id, comma-separated")
    if len(wanted) > limit:
        invalid_query(
            "ids",
            f"{len(wanted)} ids is above the limit {limit} ({limit_name}; the server's "
            f"GRADWATCH_LIMIT_{limit_name.upper()} raises it): ask in several calls",
            "limit_exceeded",
        )
    return wanted


def require_experiment(session: Session, experiment_id: str, owner: str | None) -> ExperimentRecord:
    """The experiment if `owner` (None: anyone, for admins) may see it, else 404."""
    record = store.get_experiment(session, experiment_id, owner)
    if record is None:
        raise store.ExperimentNotFound(experiment_id)
    return record


def check_step_range(step_min: int | None, step_max: int | None) -> None:
    if step_min is not None and step_max is not None and step_min > step_max:
        invalid_query("step_min", f"step_min {step_min} is after step_max {step_max}", "step_range")


def require_series(
    session: Session,
    record: ExperimentRecord,
    metric: str,
    layers: list[str] | None = None,
    step_min: int | None = None,
    step_max: int | None = None,
    per_layer: bool = False,
    minmax_points: int | None = None,
    mean_points: int | None = None,
    lttb_points: int | None = None,
) -> list[SeriesData]:
    """The metric's series, with a 404 that lists what exists when it or a layer does not.

    `minmax_points`: the caller thins with `downsample(…, minmax_points, "minmax")`, which
    the store can then serve from each chunk's representative points (`store.read_series`).
    `mean_points`: the series come back already thinned by `agg=mean`, from the chunks'
    aggregates where they allow it (service/api/bucket_reads.py).
    `lttb_points`: they come back already thinned by `agg=lttb`, from the chunks'
    representatives where there are many (service/api/lttb_reads.py).
    """
    catalog = store.series_catalog(session, record.id)
    available = catalog.metrics
    if metric not in available:
        if record.status in ACTIVE and metric in KNOWN_METRICS:
            return []  # nothing flushed yet: an empty answer, not an error
        choices = [m for m, ls in sorted(available.items()) if not per_layer or ls != [None]]
        raise HTTPException(
            status_code=404,
            detail=f"experiment {record.id} has no {'per-layer ' if per_layer else ''}metric {metric!r}; "
            f"it has: {', '.join(choices) or 'none yet'}",
        )
    if per_layer and available[metric] == [None]:
        raise HTTPException(
            status_code=404,
            detail=f"metric {metric!r} is global (one value per step, no layers): pick a per-layer "
            "metric such as grad_mean_abs, grad_norm or backprop_norm",
        )
    if layers and available[metric] == [None]:
        raise HTTPException(
            status_code=404,
            detail=f"metric {metric!r} is global and has no layers: leave out `layer`",
        )
    if layers:
        unknown = [layer for layer in layers if layer not in available[metric]]
        if unknown:
            raise HTTPException(
                status_code=404,
                detail=f"metric {metric!r} of experiment {record.id} has no layer "
                f"{', '.join(map(repr, unknown))}; its layers are: "
                f"{', '.join('null' if x is None else x for x in available[metric])}",
            )
    if mean_points is not None:
        return read_mean_thinned(session, record.id, metric, layers or None, step_min, step_max, mean_points)
    if lttb_points is not None:
        return read_lttb_thinned(session, record.id, metric, layers or None, step_min, step_max, lttb_points)
    found = catalog.find(metric, layers or None)
    return store.read_series(session, record.id, metric, layers or None, step_min, step_max, minmax_points, found)
