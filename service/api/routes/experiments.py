"""/api/v1/experiments: submit, list, read, cancel and delete experiments."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response, status

from service import store
from service.api.deps import CurrentOwner, CurrentToken, EnqueuerDep, SessionDep, SettingsDep
from service.auth.guard import LIMIT_RESPONSES, OWNER_PATTERN
from service.api.params import ExperimentId
from service.dispatch import hand_over
from service.schemas.limits import INT64_MAX, AtMost
from service.schemas.text import SafeStr
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.examples import SPEC_EXAMPLES
from service.schemas.experiments import ExperimentList, ExperimentPublic, Status
from service.schemas.spec import MAX_TAG_LENGTH, ExperimentSpec

log = logging.getLogger("gradwatch.api")

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"])

NOT_FOUND = {404: {"model": ErrorResponse, "description": "No experiment has this id."}}
INVALID = {422: {"model": ValidationErrorResponse, "description": "Invalid input, field by field."}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ExperimentPublic,
    responses={
        **INVALID,
        **LIMIT_RESPONSES,
        400: {"model": ErrorResponse, "description": "The body is not JSON."},
        413: {"model": ErrorResponse, "description": "The body is over max_request_bytes."},
        503: {"model": ErrorResponse, "description": "The broker did not take the task."},
    },
)
def create_experiment(
    spec: Annotated[ExperimentSpec, Body(openapi_examples=SPEC_EXAMPLES)],  # type: ignore[arg-type]
    session: SessionDep,
    settings: SettingsDep,
    enqueuer: EnqueuerDep,
    caller: CurrentToken,
    response: Response,
) -> ExperimentPublic:
    """Validate the spec, store the experiment as `queued` (owned by the token's owner),
    then send it to a worker; 429 when the owner is at max_active_per_owner."""
    assert spec.name is not None  # filled in by the spec's validator
    record = store.create_experiment(
        session,
        name=spec.name,
        tags=spec.tags,
        spec=spec.model_dump(mode="json"),
        queue=spec.queue,
        owner=caller.owner,
        max_active=settings.limits.max_active_per_owner,
    )
    # Only after the commit: a worker that picks the task up at once must find the row.
    for _, error in hand_over(session, enqueuer, [record], settings):
        log.error("could not send experiment %s to queue %s: %s", record.id, record.queue, error)
        store.fail_unsent_experiment(
            session, record.id, f"could not send the task to the broker: {error}"
        )
        raise HTTPException(
            status_code=503,
            detail=f"the broker did not accept the task; experiment {record.id} was marked failed: "
            "submit it again once the broker is up (GET /api/v1/health says whether it is)",
        ) from error
    response.headers["Location"] = f"{router.prefix}/{record.id}"
    return ExperimentPublic.from_record(record)


@router.get("", response_model=ExperimentList, responses=INVALID)
def list_experiments(
    session: SessionDep,
    sees: CurrentOwner,
    owner: Annotated[
        str | None,
        Query(
            pattern=OWNER_PATTERN,
            description="Only this owner's experiments (admin tokens; any other token sees only its own).",
        ),
    ] = None,
    status: Annotated[Status | None, Query(description="Only experiments in this state.")] = None,
    tag: Annotated[
        SafeStr | None, Query(min_length=1, max_length=MAX_TAG_LENGTH, description="Only experiments with this tag.")
    ] = None,
    name: Annotated[
        SafeStr | None,
        Query(min_length=1, description="Only names containing this text."),
        AtMost("max_name_length", keyword="maxLength"),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ExperimentList:
    """Your experiments (an admin's: everyone's), newest first, `limit` at a time from `offset`."""
    if sees is not None and owner not in (None, sees):
        records, total = [], 0  # another owner's rows are invisible, not forbidden
    else:
        records, total = store.list_experiments(
            session, status=status, tag=tag, name=name, offset=offset, limit=limit, owner=sees or owner
        )
    return ExperimentList(
        items=[ExperimentPublic.from_record(r) for r in records],
        total=total,
        offset=offset,
        limit=limit,
    )


@router.get("/{experiment_id}", response_model=ExperimentPublic, responses=NOT_FOUND)
def get_experiment(experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner) -> ExperimentPublic:
    record = store.get_experiment(session, experiment_id, owner)
    if record is None:
        raise store.ExperimentNotFound(experiment_id)
    return ExperimentPublic.from_record(record)


@router.post("/{experiment_id}/cancel", response_model=ExperimentPublic, responses=NOT_FOUND)
def cancel_experiment(experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner) -> ExperimentPublic:
    """A queued experiment is cancelled at once; a running one stops within a few steps
    (its worker polls the flag) and keeps the points it measured; a finished one is
    returned unchanged."""
    return ExperimentPublic.from_record(store.request_cancel(session, experiment_id, owner))


@router.delete(
    "/{experiment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "The experiment is running: cancel it first."},
    },
)
def delete_experiment(experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner) -> Response:
    """Delete an experiment that is not running, with every point it stored.

    A running one answers 409: its worker is still writing. Cancel it, wait for
    `cancelled`, then delete it.
    """
    if store.delete_experiment(session, experiment_id, keep_running=True, owner=owner):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    if store.get_experiment(session, experiment_id, owner) is None:
        raise store.ExperimentNotFound(experiment_id)
    raise HTTPException(
        status_code=409,
        detail=f"experiment {experiment_id} is running: cancel it first "
        f"(POST {router.prefix}/{experiment_id}/cancel), then delete it once its "
        "status is 'cancelled'",
    )
