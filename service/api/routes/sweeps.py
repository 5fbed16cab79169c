"""/api/v1/sweeps: create a grid of experiments, follow it, compare its members."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from service import idempotency, store
from service.analysis.compare import Comparison, varying_paths
from service.analysis.sweeps import SweepError, expand_grid, member_label
from service.api.deps import CurrentOwner, CurrentToken, EnqueuerDep, SessionDep, SettingsDep
from service.auth.guard import LIMIT_RESPONSES, OWNER_PATTERN
from service.api.comparisons import DEFAULT_METRIC, compare_records, comparison_body
from service.api.params import CompareMetric, NameContains, Offset, OneLayer, SweepId, max_points_query
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
    SweepList,
    SweepOverview,
    SweepPublic,
)
from service.store.idempotency import KeyTaken
from service.store.records import ExperimentRecord
from service.store.sweeps import (
    NewMember,
    SweepRecord,
    create_sweep,
    get_sweep,
    list_sweeps,
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


def sweep_status(counts: Mapping[str, int]) -> str:
    """finished once every member is; running once one has started or ended; else queued."""
    ended = sum(counts.get(status, 0) for status in FINISHED_STATUSES)
    if counts and ended == sum(counts.values()):
        return "finished"
    return "running" if counts.get("running") or ended else "queued"


def _public(sweep: SweepRecord, members: list[ExperimentRecord]) -> dict[str, Any]:
    members = _grid_order(sweep.grid, members)
    varying = varying_paths(sweep.grid)
    counts = Counter(member.status for member in members)
    overall = sweep_status(counts)
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
            members=new_members(members),
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
    unsent = send_members(session, enqueuer, records, settings)
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


def new_members(members: list[Any], extra_tags: tuple[str, ...] = ()) -> list[NewMember]:
    """The rows to create for a grid's expanded members (`expand_grid`)."""
    return [
        NewMember(
            name=str(member.spec.name),
            tags=[*member.spec.tags, *extra_tags],
            spec=member.spec.model_dump(mode="json"),
            queue=member.spec.queue,
            params=member.params,
        )
        for member in members
    ]


def send_members(session: Session, enqueuer: Any, records: list[Any], settings: Any) -> list[str]:
    """Hand the committed members to the broker; those it refused are marked failed and
    their ids returned."""
    unsent = []
    for record, error in hand_over(session, enqueuer, records, settings):
        log.error("could not send sweep member %s to queue %s: %s", record.id, record.queue, error)
        store.fail_unsent_experiment(session, record.id, f"could not send the task to the broker: {error}")
        unsent.append(record.id)
    return unsent


def _replayed(session: Session, sweep_id: str, owner: str, response: Response) -> dict[str, Any]:
    sweep = idempotency.replay(response, get_sweep(session, sweep_id, owner), "sweep", sweep_id, f"{router.prefix}/{sweep_id}")
    return _public(sweep, sweep_members(session, sweep_id, owner))


@router.get("", response_model=SweepList, responses=INVALID)
def list_all(
    session: SessionDep,
    sees: CurrentOwner,
    owner: Annotated[
        str | None,
        Query(pattern=OWNER_PATTERN, description="Only this owner's sweeps (admin tokens; any other token sees only its own)."),
    ] = None,
    name: NameContains = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SweepList:
    """Your sweeps (an admin's: everyone's), newest first, `limit` at a time from `offset`,
    each with its grid and its members' count per status."""
    if sees is not None and owner not in (None, sees):
        page, total = [], 0  # another owner's sweeps are invisible, not forbidden
    else:
        page, total = list_sweeps(session, owner=sees or owner, name=name, offset=offset, limit=limit)
    return SweepList(
        items=[
            SweepOverview(
                id=sweep.id,
                name=sweep.name,
                owner=sweep.owner,
                created_at=sweep.created_at,
                grid=sweep.grid,
                varying=varying_paths(sweep.grid),
                size=sum(counts.values()),
                status=sweep_status(counts),
                status_counts=counts,
            )
            for sweep, counts in page
        ],
        total=total,
        offset=offset,
        limit=limit,
    )


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
    params = [member.sweep_params or {} for member in members]
    what = f"member of sweep {sweep_id}"
    return sweep, compare_records(session, members, params, sweep.grid, metric, layer, max_points, what)


@router.get("/{sweep_id}/compare", response_model=CompareResponse, responses={**NOT_FOUND, **INVALID})
def compare_members(
    sweep_id: SweepId,
    session: SessionDep,
    owner: CurrentOwner,
    metric: CompareMetric = DEFAULT_METRIC,
    layer: OneLayer = None,
    max_points: max_points_query(2, "At most this many steps (bucket means).") = 1000,
) -> JSONBytesResponse:
    """Every member's series on one step axis, labelled by the grid values that vary, and
    each group of members that differ only by `training.seed` as a mean with a min–max band;
    `metric` defaults to loss, as in compare.png, and each member names the layer it drew."""
    sweep, comparison = build_comparison(session, sweep_id, owner, metric, layer, max_points)
    return JSONBytesResponse({"sweep_id": sweep.id, **comparison_body(comparison)})
