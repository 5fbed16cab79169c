"""/api/v1/experiments: submit, list, read, cancel and delete experiments."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response, status

from service import idempotency, store
from service.api.deps import CurrentOwner, CurrentToken, EnqueuerDep, SessionDep, SettingsDep
from service.auth.guard import LIMIT_RESPONSES, OWNER_PATTERN
from service.api.lookups import parse_id_list
from service.api.params import ExperimentId, NameContains, Offset
from service.api.responses import JSONBytesResponse
from service.callbacks.allowlist import check_notify
from service.dispatch import hand_over
from service.idempotency import REPLAY_RESPONSES, IdempotencyKeyHeader
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.examples import SPEC_EXAMPLES
from service.schemas.experiments import ExperimentList, ExperimentPublic, Status
from service.schemas.spec import MAX_TAG_LENGTH, ExperimentSpec
from service.schemas.text import SafeStr
from service.store.idempotency import KeyTaken

log = logging.getLogger("gradwatch.api")

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"])

NOT_FOUND = {404: {"model": ErrorResponse, "description": "No experiment has this id."}}
INVALID = {422: {"model": ValidationErrorResponse, "description": "Invalid input, field by field."}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ExperimentPublic,
    responses={
        **REPLAY_RESPONSES,
        **INVALID,
        **LIMIT_RESPONSES,
        400: {"model": ErrorResponse, "description": "The body is not JSON."},
        409: {"model": ErrorResponse, "description": "The experiment this Idempotency-Key created was deleted."},
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
    idempotency_key: IdempotencyKeyHeader = None,
) -> ExperimentPublic:
    """Validate the spec, store the experiment as `queued` (owned by the token's owner),
    then send it to a worker; 429 when the owner is at max_active_per_owner. With an
    `Idempotency-Key` seen before (same body), 200 with the experiment it created."""
    assert spec.name is not None  # filled in by the spec's validator
    check_notify(spec.notify, settings, ("notify",))
    stored_spec = spec.model_dump(mode="json")
    claim, replay = idempotency.begin(session, settings, caller.owner, idempotency_key, "experiment", stored_spec)
    if replay is not None:
        return _replayed(session, replay, caller.owner, response)
    try:
        record = store.create_experiment(
            session,
            name=spec.name,
            tags=spec.tags,
            spec=stored_spec,
            queue=spec.queue,
            owner=caller.owner,
            max_active=settings.limits.max_active_per_owner,
            idempotency=claim,
        )
    except KeyTaken:
        assert claim is not None
        log.info("Idempotency-Key %r of %s: a concurrent request created the experiment", claim.key, claim.owner)
        return _replayed(session, idempotency.winner(session, claim), caller.owner, response)
    # Only after the commit: a worker that picks the task up at once must find the row.
    for _, error in hand_over(session, enqueuer, [record], settings):
        log.error("could not send experiment %s to queue %s: %s", record.id, record.queue, error)
        if claim is not None:  # a retry with this key must create anew, not replay a failure
            store.forget_key(session, claim.owner, claim.key)
        store.fail_unsent_experiment(
            session, record.id, f"could not send the task to the broker: {error}"
        )
        raise HTTPException(
            status_code=503,
            detail=f"the broker did not accept the task; experiment {record.id} was marked failed: "
            "submit it again once the broker is up (GET /api/v1/health says whether it is)",
        ) from error
    response.headers["Location"] = f"{router.prefix}/{record.id}"
    return ExperimentPublic.from_record(record, [])  # no worker has claimed it yet


def _replayed(session: SessionDep, experiment_id: str, owner: str, response: Response) -> ExperimentPublic:
    record = store.get_experiment(session, experiment_id, owner)
    location = f"{router.prefix}/{experiment_id}"
    replayed = idempotency.replay(response, record, "experiment", experiment_id, location)
    return ExperimentPublic.from_record(replayed, store.list_attempts(session, experiment_id))


def _parse_ids(ids: str | None, settings: SettingsDep) -> list[str] | None:
    return None if ids is None else parse_id_list(ids, settings.limits.max_bulk_ids, "max_bulk_ids")


@router.get("", response_model=ExperimentList, responses=INVALID)
def list_experiments(
    session: SessionDep,
    sees: CurrentOwner,
    settings: SettingsDep,
    ids: Annotated[
        SafeStr | None,
        Query(
            min_length=1,
            description="Only these experiments: ids separated by commas, at most "
            "GRADWATCH_LIMIT_MAX_BULK_IDS (500 by default); `limit` then defaults to their "
            "count, and `missing` lists the ids none of your experiments has.",
        ),
    ] = None,
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
    name: NameContains = None,
    offset: Offset = 0,
    limit: Annotated[int | None, Query(ge=1, le=500, description="Default 50 (with `ids`: their count).")] = None,
) -> ExperimentList:
    """Your experiments (an admin's: everyone's), newest first, `limit` at a time from `offset`."""
    wanted = _parse_ids(ids, settings)
    limit = limit or (len(wanted) if wanted else 50)
    missing: list[str] = []
    if sees is not None and owner not in (None, sees):
        records, total = [], 0  # another owner's rows are invisible, not forbidden
        missing = wanted or []
    else:
        records, total = store.list_experiments(
            session, status=status, tag=tag, name=name, offset=offset, limit=limit, owner=sees or owner, ids=wanted
        )
        if wanted:
            missing = store.missing_experiments(session, wanted, sees or owner)
    return ExperimentList(
        items=[ExperimentPublic.from_record(r) for r in records],
        total=total,
        offset=offset,
        limit=limit,
        missing=missing,
    )


@router.get("/{experiment_id}", response_model=ExperimentPublic, responses=NOT_FOUND)
def get_experiment(experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner) -> Response:
    record = store.get_experiment(session, experiment_id, owner)
    if record is None:
        raise store.ExperimentNotFound(experiment_id)
    # The status poll, the API's most frequent request: serialised here, in the thread
    # that built it, rather than validated again against the response model and then
    # serialised in another hand-off to the thread pool (the model is the schema either way).
    attempts = store.list_attempts(session, experiment_id)
    return JSONBytesResponse(ExperimentPublic.from_record(record, attempts).model_dump(mode="json"))


@router.post("/{experiment_id}/cancel", response_model=ExperimentPublic, responses=NOT_FOUND)
def cancel_experiment(
    experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner, settings: SettingsDep
) -> ExperimentPublic:
    """A queued experiment (new, or waiting to resume) is cancelled at once; a running one stops within a few steps
    (its worker polls the flag) and keeps the points it measured; a finished one is
    returned unchanged."""
    record = store.request_cancel(session, experiment_id, owner, keep_checkpoint=settings.keep_checkpoints)
    return ExperimentPublic.from_record(record, store.list_attempts(session, experiment_id))


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
