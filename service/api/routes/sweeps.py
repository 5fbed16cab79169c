"""/api/v1/sweeps: create a grid of experiments, follow it, compare its members."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, HTTPException, Response, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from service import idempotency, store
from service.analysis.compare import Comparison, MemberSeries, compare, varying_paths
from service.analysis.sweeps import SweepError, expand_grid, member_label
from service.api.deps import CurrentOwner, CurrentToken, EnqueuerDep, SessionDep, SettingsDep
from service.auth.guard import LIMIT_RESPONSES
from service.api.params import Metric, OneLayer, SweepId, max_points_query
from service.callbacks.allowlist import check_notify
from service.idempotency import REPLAY_RESPONSES, IdempotencyKeyHeader
from service.api.responses import JSONBytesResponse
from service.db.models import FINISHED_STATUSES
from service.dispatch import hand_over
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.experiments import ExperimentResult, Progress
from service.schemas.sweeps import (
    SWEEP_EXAMPLE,
    CompareResponse,
    SweepCreate,
    SweepPublic,
)
from service.store.idempotency import KeyTaken
from service.store.records import ExperimentRecord
from service.store.sweeps import (
    NewMember,
    SweepRecord,
    create_sweep,
    get_sweep,
    sweep_members,
)

log = logging.getLogger("gradwatch.api")

router = APIRouter(prefix="/api/v1/sweeps", tags=["sweeps"])

NOT_FOUND = {404: {"model": ErrorResponse, "description": "No sweep has this id."}}
INVALID = {422: {"model": ValidationErrorResponse, "description": "Invalid grid or member spec."}}


class SweepNotFound(HTTPException):
    def __init__(self, sweep_id: SweepId) -> None:
        super().__init__(status_code=404, detail=f"no sweep with id {sweep_id!r}")


def _grid_order(grid: dict[str, list[Any]], members: list[ExperimentRecord]) -> list[ExperimentRecord]:
    """Members in the order of the grid's product (the last path varies fastest)."""

    def position(record: ExperimentRecord) -> tuple[int, ...]:
        params = record.sweep_params or {}
        return tuple(
            values.index(params[path]) if params.get(path) in values else len(values)
            for path, values in grid.items()
        )

    return sorted(members, key=position)


def _public(sweep: SweepRecord, members: list[ExperimentRecord]) -> dict[str, Any]:
    members = _grid_order(sweep.grid, members)
    varying = varying_paths(sweep.grid)
    counts = Counter(member.status for member in members)
    if members and all(member.status in FINISHED_STATUSES for member in members):
        overall = "finished"
    elif counts["running"] or any(member.status in FINISHED_STATUSES for member in members):
        overall = "running"
    else:
        overall = "queued"
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        owner=sweep.owner,
        created_at=sweep.created_at,
        base=sweep.base_spec,
        grid=sweep.grid,
        varying=varying,
        size=len(members),
        status=overall,
        status_counts=dict(counts),
        members=[
            {
                "id": member.id,
                "name": member.name,
                "status": member.status,
                "params": member.sweep_params or {},
                "label": member_label(member.sweep_params or {}, varying or None),
                "progress": Progress(step=member.progress_step, total=member.progress_total),
                "result": ExperimentResult.model_validate(member.result) if member.result else None,
                "error": member.error,
            }
            for member in members
        ],
    ).model_dump(mode="json")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    responses={
        **REPLAY_RESPONSES,
        **INVALID,
        **LIMIT_RESPONSES,
        409: {"model": ErrorResponse, "description": "The sweep this Idempotency-Key created was deleted."},
        503: {"model": ErrorResponse, "description": "The broker did not take some members."},
    },
)
def create(
    body: Annotated[SweepCreate, Body(openapi_examples={"activations": {"value": SWEEP_EXAMPLE}})],
    session: SessionDep,
    settings: SettingsDep,
    enqueuer: EnqueuerDep,
    caller: CurrentToken,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, Any]:
    """One experiment per combination of the grid's values, each validated as an
    ExperimentSpec, created together and then queued; 422 above max_sweep_size, 429 when
    the members would take the owner above max_active_per_owner. With an
    `Idempotency-Key` seen before (same body), 200 with the sweep it created."""
    try:
        members = expand_grid(body.base, body.grid, settings.limits)
    except SweepError as error:
        raise RequestValidationError(error.errors) from None
    check_notify(body.notify, settings, ("notify",))
    for member in members:  # the base's notify, or one the grid put in
        check_notify(member.spec.notify, settings, ("base", "notify"))
    claim, replay = idempotency.begin(
        session, settings, caller.owner, idempotency_key, "sweep", body.model_dump(mode="json")
    )
    if replay is not None:
        return _replayed(session, replay, caller.owner, response)
    name = body.name or str(body.base.get("name") or "sweep")
    try:
        sweep, records = create_sweep(
            session,
            name=name,
            base_spec=body.base,
            grid=body.grid,
            members=[
                NewMember(
                    name=str(member.spec.name),
                    tags=member.spec.tags,
                    spec=member.spec.model_dump(mode="json"),
                    queue=member.spec.queue,
                    params=member.params,
                )
                for member in members
            ],
            owner=caller.owner,
            max_active=settings.limits.max_active_per_owner,
            notify=None if body.notify is None else body.notify.model_dump(mode="json"),
            idempotency=claim,
        )
    except KeyTaken:
        assert claim is not None
        log.info("Idempotency-Key %r of %s: a concurrent request created the sweep", claim.key, claim.owner)
        return _replayed(session, idempotency.winner(session, claim), caller.owner, response)
    # Only after the commit: a worker that picks a task up at once must find its row.
    unsent = []
    for record, error in hand_over(session, enqueuer, records, settings):
        log.error("could not send sweep member %s to queue %s: %s", record.id, record.queue, error)
        store.fail_unsent_experiment(session, record.id, f"could not send the task to the broker: {error}")
        unsent.append(record.id)
    if unsent:
        if claim is not None:  # a retry with this key must create anew, not replay a failure
            store.forget_key(session, claim.owner, claim.key)
        raise HTTPException(
            status_code=503,
            detail=f"the broker did not accept {len(unsent)} of {len(records)} members of sweep {sweep.id} "
            f"({', '.join(unsent[:3])}{', …' if len(unsent) > 3 else ''}); they were marked failed: submit the "
            "sweep again once the broker is up (GET /api/v1/health says whether it is)",
        )
    response.headers["Location"] = f"{router.prefix}/{sweep.id}"
    return _public(sweep, records)


def _replayed(session: Session, sweep_id: str, owner: str, response: Response) -> dict[str, Any]:
    sweep = idempotency.replay(response, get_sweep(session, sweep_id, owner), "sweep", sweep_id, f"{router.prefix}/{sweep_id}")
    return _public(sweep, sweep_members(session, sweep_id, owner))


@router.get("/{sweep_id}", response_model=SweepPublic, responses=NOT_FOUND)
def read(sweep_id: SweepId, session: SessionDep, owner: CurrentOwner) -> dict[str, Any]:
    """The sweep, its grid, and every member's status, progress and result."""
    sweep = get_sweep(session, sweep_id, owner)
    if sweep is None:
        raise SweepNotFound(sweep_id)
    return _public(sweep, sweep_members(session, sweep_id, owner))


def build_comparison(
    session: Session, sweep_id: str, owner: str | None, metric: str, layer: str | None, max_points: int | None
) -> tuple[SweepRecord, Comparison]:
    sweep = get_sweep(session, sweep_id, owner)
    if sweep is None:
        raise SweepNotFound(sweep_id)
    members = _grid_order(sweep.grid, sweep_members(session, sweep_id, owner))
    inputs = []
    seen_metric = False
    for member in members:
        available = store.list_metrics(session, member.id)
        series = None
        if metric in available:
            seen_metric = True
            layers = available[metric]
            if layer is not None and layer not in layers:
                raise HTTPException(
                    status_code=404,
                    detail=f"member {member.id} ({member.name}) has no layer {layer!r} for {metric!r}; "
                    f"its layers are: {', '.join('null' if x is None else x for x in layers)}",
                )
            # Default: the input-most layer, where a vanishing gradient shows first.
            chosen = layer if layer is not None else layers[0]
            found = store.read_series(session, member.id, metric, [chosen])
            series = found[0] if found else None
        inputs.append(
            MemberSeries(member.id, member.name, member.status, member.sweep_params or {}, series)
        )
    if not seen_metric and any(m.status in FINISHED_STATUSES for m in members):
        raise HTTPException(
            status_code=404, detail=f"no member of sweep {sweep_id} has recorded the metric {metric!r}"
        )
    return sweep, compare(metric, layer, sweep.grid, inputs, max_points)


@router.get("/{sweep_id}/compare", response_model=CompareResponse, responses={**NOT_FOUND, **INVALID})
def compare_members(
    sweep_id: SweepId,
    session: SessionDep,
    owner: CurrentOwner,
    metric: Metric,
    layer: OneLayer = None,
    max_points: max_points_query(2, "At most this many steps (bucket means).") = 1000,
) -> JSONBytesResponse:
    """Every member's series on one step axis, labelled by the grid values that vary, and
    each group of members that differ only by `training.seed` as a mean with a min–max band."""
    sweep, comparison = build_comparison(session, sweep_id, owner, metric, layer, max_points)
    return JSONBytesResponse(
        {
            "sweep_id": sweep.id,
            "metric": comparison.metric,
            "layer": comparison.layer,
            "varying": comparison.varying,
            "steps": comparison.steps,
            "members": [
                {**member.__dict__, "values": np.ascontiguousarray(member.values)} for member in comparison.members
            ],
            "groups": [group.__dict__ for group in comparison.groups],
            "downsampled": comparison.downsampled,
        }
    )
