"""/api/v1/compare: any experiments the caller may read, sweep or not, on one metric and
layer, labelled by the spec fields that differ, each with its summary's headline.

Sync routes: FastAPI runs them in its thread pool, off the event loop, because each
experiment's series are read whole and diagnosed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from service import store
from service.analysis.compare import Comparison
from service.analysis.diagnosis import diagnose
from service.analysis.spec_diff import differing_fields
from service.api.comparisons import DEFAULT_METRIC, compare_records, comparison_body, picture_headers
from service.api.deps import CurrentOwner, SessionDep, SettingsDep
from service.api.lookups import parse_id_list
from service.api.params import CompareMetric, OneLayer, max_points_query
from service.api.responses import JSONBytesResponse
from service.api.routes.analysis import read_for_diagnosis
from service.api.routes.plots import PNG, Log, png_response
from service.config import Settings
from service.plots import render_compare
from service.schemas.comparisons import ExperimentsCompareResponse
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.limits import LIMIT_EXTENSION, current_limits
from service.schemas.text import SafeStr
from service.store.records import ExperimentRecord

router = APIRouter(prefix="/api/v1", tags=["compare"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "An unknown experiment (none of yours has the id), metric or layer."},
    422: {"model": ValidationErrorResponse, "description": "Invalid query parameters, or too many ids."},
}
# The count of ids is bounded by a setting: published as `x-max-ids`, from the serving
# app's Limits (service/api/openapi.py), since no JSON Schema keyword counts the
# comma-separated parts of one string.
MAX_IDS_KEYWORD = "x-max-ids"
Ids = Annotated[
    SafeStr,
    Query(
        min_length=1,
        description="The experiments, ids separated by commas, in the order to draw them; at most "
        f"GRADWATCH_LIMIT_MAX_COMPARE_IDS (`{MAX_IDS_KEYWORD}`) of them.",
        json_schema_extra={
            MAX_IDS_KEYWORD: current_limits().max_compare_ids,
            LIMIT_EXTENSION: {MAX_IDS_KEYWORD: "max_compare_ids"},
        },
    ),
]
MaxPoints = max_points_query(2, "At most this many steps (bucket means).")


def _records(session: Session, ids: str, owner: str | None, settings: Settings) -> list[ExperimentRecord]:
    wanted = parse_id_list(ids, settings.limits.max_compare_ids, "max_compare_ids")
    records, _ = store.list_experiments(session, ids=wanted, owner=owner, limit=len(wanted))
    by_id = {record.id: record for record in records}
    missing = [experiment_id for experiment_id in wanted if experiment_id not in by_id]
    if missing:  # another owner's experiment is unknown, as everywhere
        raise HTTPException(status_code=404, detail=f"no experiment with id {', '.join(map(repr, missing))}")
    return [by_id[experiment_id] for experiment_id in wanted]


def build(
    session: Session, ids: str, owner: str | None, settings: Settings, metric: str, layer: str | None, max_points: int | None
) -> tuple[list[ExperimentRecord], Comparison]:
    records = _records(session, ids, owner, settings)
    grid, params = differing_fields([record.spec for record in records])
    comparison = compare_records(session, records, params, grid, metric, layer, max_points, "experiment of these")
    return records, comparison


def _headline(session: Session, record: ExperimentRecord, settings: Settings) -> dict[str, Any]:
    diagnosis = diagnose(read_for_diagnosis(session, record), settings.diagnosis, max_points=100)
    healthy = "no finding: the gradients stayed within the thresholds"
    return {
        "verdict": diagnosis.verdict,
        "headline": diagnosis.findings[0].message if diagnosis.findings else healthy,
        "findings": [finding.kind for finding in diagnosis.findings],
        "result": record.result,
    }


@router.get("/compare", response_model=ExperimentsCompareResponse, responses=ERRORS)
def compare_experiments(
    ids: Ids,
    session: SessionDep,
    owner: CurrentOwner,
    settings: SettingsDep,
    metric: CompareMetric = DEFAULT_METRIC,
    layer: OneLayer = None,
    max_points: MaxPoints = 1000,
) -> JSONBytesResponse:
    """The experiments' series of `metric` on one step axis (default: loss; per-layer
    metrics at each one's input-most layer unless `layer` is given; each member names the
    layer it drew), labelled by the spec fields that differ between them, experiments that
    differ only by `training.seed` as a mean with a min–max band, and each one's verdict."""
    records, comparison = build(session, ids, owner, settings, metric, layer, max_points)
    body = comparison_body(comparison)
    for member, record in zip(body["members"], records, strict=True):
        if not member["label"]:
            member["label"] = record.name
        member["summary"] = _headline(session, record, settings)
    return JSONBytesResponse(body)


@router.get("/compare.png", response_class=Response, responses=PNG)
def plot_experiments(
    ids: Ids,
    session: SessionDep,
    owner: CurrentOwner,
    settings: SettingsDep,
    metric: CompareMetric = DEFAULT_METRIC,
    layer: OneLayer = None,
    log: Log = None,
    max_points: MaxPoints = 1000,
) -> Response:
    """The same comparison drawn: one curve per group of seeds, its min–max band over seeds."""
    _, comparison = build(session, ids, owner, settings, metric, layer, max_points)
    return png_response(render_compare(comparison, "compared experiments", log), picture_headers(comparison))
