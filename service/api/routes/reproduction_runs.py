"""/api/v1/reproduction-runs/{id}: per claim, what was expected, what was measured, and
whether it reproduced.

A sync route: FastAPI runs it in its thread pool, because it diagnoses every finished
member (the summary route's reader and analysis) to measure what the checks read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy.orm import Session

from service.analysis.diagnosis import diagnose
from service.api.deps import CurrentOwner, SessionDep, SettingsDep
from service.api.params import ReproductionRunId
from service.api.routes.analysis import read_for_diagnosis
from service.config import Settings
from service.db.models import FINISHED_STATUSES
from service.reproductions.catalogue import BY_NAME
from service.reproductions.measures import MemberFacts
from service.reproductions.report import run_report
from service.schemas.errors import ErrorResponse
from service.schemas.reproductions import ReproductionRunPublic
from service.store.reproductions import get_reproduction_run
from service.store.sweeps import sweep_members

router = APIRouter(prefix="/api/v1/reproduction-runs", tags=["reproductions"])

DIAGNOSIS_POINTS = 200  # the report reads numbers, not curves: a short per-step ratio will do


def read_report(session: Session, settings: Settings, run_id: str, owner: str | None) -> dict[str, Any]:
    run = get_reproduction_run(session, run_id, owner)
    study = BY_NAME.get(run.study) if run is not None else None
    if run is None or study is None:
        raise HTTPException(status_code=404, detail=f"no reproduction run with id {run_id!r}")
    facts = []
    for record in sweep_members(session, run.sweep_id, owner):
        if record.status in FINISHED_STATUSES:
            data = read_for_diagnosis(session, record)
            facts.append(MemberFacts(record, diagnose(data, settings.diagnosis, DIAGNOSIS_POINTS), data.timesteps))
        else:
            facts.append(MemberFacts(record, None))
    return ReproductionRunPublic.model_validate(run_report(run, study, facts)).model_dump(mode="json")


@router.get(
    "/{run_id}",
    response_model=ReproductionRunPublic,
    responses={404: {"model": ErrorResponse, "description": "No reproduction run has this id."}},
)
def read_run(run_id: ReproductionRunId, session: SessionDep, settings: SettingsDep, owner: CurrentOwner) -> dict[str, Any]:
    """The run's status and, per claim, each check's expected and measured value, whether
    it passed, and links to the plots that show it; `reproduced` is null until every
    member it reads has finished."""
    return read_report(session, settings, run_id, owner)
