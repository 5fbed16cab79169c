"""Callbacks: each experiment's and sweep's delivery attempts, and the owner's secret.

    GET  /api/v1/experiments/{id}/deliveries   the callbacks of one experiment
    GET  /api/v1/sweeps/{id}/deliveries        the sweep's own callback
    GET  /api/v1/callbacks/secret              your signing secret (made on first use)
    POST /api/v1/callbacks/secret/rotate       a new one; later attempts are signed with it
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from service import store
from service.api.deps import CurrentOwner, CurrentToken, SessionDep
from service.api.params import ExperimentId, SweepId
from service.api.routes.sweeps import NOT_FOUND as SWEEP_NOT_FOUND
from service.api.routes.sweeps import SweepNotFound
from service.auth.tokens import Scope
from service.schemas.callbacks import CallbackSecretPublic, DeliveryList, DeliveryPublic
from service.schemas.errors import ErrorResponse
from service.store import callbacks as rows
from service.store.sweeps import get_sweep

experiments_router = APIRouter(prefix="/api/v1/experiments", tags=["callbacks"])
sweeps_router = APIRouter(prefix="/api/v1/sweeps", tags=["callbacks"])
secret_router = APIRouter(prefix="/api/v1/callbacks", tags=["callbacks"])

NOT_FOUND = {404: {"model": ErrorResponse, "description": "No experiment has this id."}}
READ_SCOPE = {403: {"model": ErrorResponse, "description": "A read token may not see or change the secret."}}


@experiments_router.get("/{experiment_id}/deliveries", response_model=DeliveryList, responses=NOT_FOUND)
def experiment_deliveries(experiment_id: ExperimentId, session: SessionDep, owner: CurrentOwner) -> DeliveryList:
    """The experiment's callback (from its spec's `notify`) with every delivery attempt:
    empty when it has none."""
    if store.get_experiment(session, experiment_id, owner) is None:
        raise store.ExperimentNotFound(experiment_id)
    records = rows.list_callbacks(session, experiment_id=experiment_id)
    return DeliveryList(items=[DeliveryPublic.from_record(record) for record in records])


@sweeps_router.get("/{sweep_id}/deliveries", response_model=DeliveryList, responses=SWEEP_NOT_FOUND)
def sweep_deliveries(sweep_id: SweepId, session: SessionDep, owner: CurrentOwner) -> DeliveryList:
    """The sweep's own callback (its `notify`, sent once every member has ended); each
    member's are under its experiment."""
    if get_sweep(session, sweep_id, owner) is None:
        raise SweepNotFound(sweep_id)
    records = rows.list_callbacks(session, sweep_id=sweep_id)
    return DeliveryList(items=[DeliveryPublic.from_record(record) for record in records])


def _writer(caller: CurrentToken) -> str:
    # The secret lets its holder forge events: a read token must not learn it.
    if caller.scope is Scope.read:
        raise HTTPException(
            status_code=403, detail="a read token may not see the callback secret: use a write or admin token"
        )
    return caller.owner


@secret_router.get("/secret", response_model=CallbackSecretPublic, responses=READ_SCOPE)
def get_secret(session: SessionDep, caller: CurrentToken) -> CallbackSecretPublic:
    """The secret your callbacks are signed with (your token's owner's), made on first use."""
    owner = _writer(caller)
    return CallbackSecretPublic(owner=owner, secret=rows.callback_secret(session, owner))


@secret_router.post("/secret/rotate", response_model=CallbackSecretPublic, responses=READ_SCOPE)
def rotate_secret(session: SessionDep, caller: CurrentToken) -> CallbackSecretPublic:
    """Replace the secret: attempts signed from now on (retries included) use the new one."""
    owner = _writer(caller)
    return CallbackSecretPublic(owner=owner, secret=rows.rotate_secret(session, owner))
