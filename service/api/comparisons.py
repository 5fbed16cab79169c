"""Comparisons on one metric and layer, of a sweep's members or of any experiments the
caller may read: each one's series, read the same way, and one error when none has it.

The default layer is each experiment's first (input-most) one, where a vanishing gradient
shows first; each compared member says which layer it drew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fastapi import HTTPException
from sqlalchemy.orm import Session

from service import store
from service.analysis.compare import Comparison, MemberSeries, compare, drawn_layers
from service.db.models import FINISHED_STATUSES
from service.store.records import ExperimentRecord

DEFAULT_METRIC = "loss"  # the JSON and the PNG of every comparison agree on it


def read_member(
    session: Session, record: ExperimentRecord, metric: str, layer: str | None, params: Mapping[str, Any]
) -> MemberSeries:
    """The record's series of `metric` at `layer` (default: its input-most layer); None
    when it has not recorded the metric (yet); 404 when it has, but not at `layer`."""
    available = store.list_metrics(session, record.id)
    series = None
    if metric in available:
        layers = available[metric]
        if layer is not None and layer not in layers:
            raise HTTPException(
                status_code=404,
                detail=f"experiment {record.id} ({record.name}) has no layer {layer!r} for {metric!r}; "
                f"its layers are: {', '.join('null' if x is None else x for x in layers)}",
            )
        found = store.read_series(session, record.id, metric, [layer if layer is not None else layers[0]])
        series = found[0] if found else None
    return MemberSeries(record.id, record.name, record.status, dict(params), series)


def compare_records(
    session: Session,
    records: Sequence[ExperimentRecord],
    params: Sequence[Mapping[str, Any]],
    grid: Mapping[str, Sequence[Any]],
    metric: str,
    layer: str | None,
    max_points: int | None,
    what: str,
) -> Comparison:
    """`records` (with their `params`, the values of `grid`'s paths) compared on `metric`;
    404 when a finished one exists and none recorded it (`what` names them in the message)."""
    inputs = [read_member(session, record, metric, layer, p) for record, p in zip(records, params, strict=True)]
    if all(m.series is None for m in inputs) and any(r.status in FINISHED_STATUSES for r in records):
        raise HTTPException(status_code=404, detail=f"no {what} has recorded the metric {metric!r}")
    return compare(metric, layer, grid, inputs, max_points)


def comparison_body(comparison: Comparison) -> dict[str, Any]:
    """The JSON both compare routes share (numpy arrays; JSONBytesResponse encodes them)."""
    return {
        "metric": comparison.metric,
        "layer": comparison.layer,
        "varying": comparison.varying,
        "steps": comparison.steps,
        "members": [{**m.__dict__, "values": np.ascontiguousarray(m.values)} for m in comparison.members],
        "groups": [group.__dict__ for group in comparison.groups],
        "downsampled": comparison.downsampled,
    }


def picture_headers(comparison: Comparison) -> dict[str, str]:
    """What a PNG drew, for callers that cannot read its axis label."""
    return {"X-Gradwatch-Metric": comparison.metric, "X-Gradwatch-Layer": ",".join(drawn_layers(comparison))}
