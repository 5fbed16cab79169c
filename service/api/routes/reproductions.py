"""/api/v1/reproductions: the catalogue of studies, and starting one as a sweep."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Response, status
from fastapi.exceptions import RequestValidationError

from service.analysis.sweeps import SweepError, expand_grid
from service.api.deps import CurrentToken, EnqueuerDep, SessionDep, SettingsDep
from service.api.routes.reproduction_runs import read_report
from service.auth.guard import LIMIT_RESPONSES
from service.api.routes.sweeps import new_members, send_members
from service.reproductions.catalogue import BY_NAME, STUDIES
from service.reproductions.records import Study
from service.reproductions.report import study_public
from service.schemas.errors import ErrorResponse, ValidationErrorResponse
from service.schemas.reproductions import ReproductionList, ReproductionRunCreate, ReproductionRunPublic, StudyPublic
from service.schemas.text import SafeStr
from service.store.reproductions import NewReproductionRun
from service.store.sweeps import create_sweep


router = APIRouter(prefix="/api/v1/reproductions", tags=["reproductions"])

StudyName = Annotated[SafeStr, Path(max_length=100, description="The study's name, e.g. `essay-lstm-memory`.")]
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No study in the catalogue has this name."}}


def require_study(name: str) -> Study:
    study = BY_NAME.get(name)
    if study is None:
        raise HTTPException(
            status_code=404,
            detail=f"no study named {name!r} in the catalogue; the studies are: {', '.join(BY_NAME)}",
        )
    return study


@router.get("", response_model=ReproductionList)
def list_studies() -> dict[str, Any]:
    """Every study gradwatch reproduces: its claims, sources, protocol (a sweep) and the
    numbers expected, with the tolerance each check allows."""
    return {"studies": [study_public(study) for study in STUDIES]}


@router.get("/{name}", response_model=StudyPublic, responses=NOT_FOUND)
def read_study(name: StudyName) -> dict[str, Any]:
    """One study of the catalogue."""
    return study_public(require_study(name))


@router.post(
    "/{name}/runs",
    status_code=status.HTTP_201_CREATED,
    response_model=ReproductionRunPublic,
    responses={
        **NOT_FOUND,
        **LIMIT_RESPONSES,
        422: {"model": ValidationErrorResponse, "description": "An override the spec does not allow."},
        503: {"model": ErrorResponse, "description": "The broker did not take some members."},
    },
)
def start_run(
    name: StudyName,
    session: SessionDep,
    settings: SettingsDep,
    enqueuer: EnqueuerDep,
    caller: CurrentToken,
    response: Response,
    body: Annotated[ReproductionRunCreate | None, Body()] = None,
) -> dict[str, Any]:
    """Run the study's protocol as a sweep owned by the caller (429 above
    max_active_per_owner, as any sweep); `GET /api/v1/reproduction-runs/{id}` reports it.
    With `overrides`, a variant: the claims are checked against what the changed
    protocol measures."""
    study = require_study(name)
    overrides = body.overrides if body is not None else {}
    protocol = study.protocol
    try:
        members = expand_grid(protocol["base"], protocol["grid"], settings.limits, overrides)
    except SweepError as error:
        raise RequestValidationError(error.errors) from None
    run = NewReproductionRun(id=uuid.uuid4().hex, study=study.name, overrides=dict(overrides))
    sweep, records = create_sweep(
        session,
        name=f"reproduce {study.name}" + (" (variant)" if overrides else ""),
        base_spec=protocol["base"],
        grid=protocol["grid"],
        members=new_members(members, ("reproduction", study.name)),
        owner=caller.owner,
        max_active=settings.limits.max_active_per_owner,
        reproduction=run,
    )
    unsent = send_members(session, enqueuer, records, settings)
    if unsent:
        raise HTTPException(
            status_code=503,
            detail=f"the broker did not accept {len(unsent)} of {len(records)} members of reproduction run "
            f"{run.id} (sweep {sweep.id}); they were marked failed: start the run again once the broker is up",
        )
    response.headers["Location"] = f"/api/v1/reproduction-runs/{run.id}"
    return read_report(session, settings, run.id, caller.sees)
