"""Reproductions: what `/api/v1/reproductions` lists and `/api/v1/reproduction-runs/{id}` reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from service.schemas.documents import STORABLE_JSON_REF
from service.schemas.sweeps import SPEC_PATHS

OVERRIDES_SCHEMA = {
    "type": "object",
    "description": "Dotted spec path → value, applied to every member after the protocol's grid.",
    "propertyNames": {"enum": list(SPEC_PATHS)},
    "additionalProperties": STORABLE_JSON_REF,
}


class CheckPublic(BaseModel):
    label: str
    measure: str = Field(description="What is read from the member (see `measures`).")
    member: dict[str, Any] = Field(description="Grid path → value: the member this check reads.")
    expected: str = Field(description="The tolerance, e.g. `0.015 … 0.019`, `= vanishing`.")
    measured_here: Any = Field(description="What gradwatch measured when the entry was written (null: not yet).")


class ClaimPublic(BaseModel):
    sentence: str
    source: str = Field(description="The paper's (or the essay's) figure, table or section.")
    paper_value: str = Field(description="What the source reports, in its own terms.")
    checks: list[CheckPublic]


class StudyPublic(BaseModel):
    name: str
    title: str
    reference: str
    protocol: dict[str, Any] = Field(description="The sweep it runs: `base` (an ExperimentSpec) and `grid`.")
    claims: list[ClaimPublic]
    minutes_here: float = Field(description="Wall time of one run on gradwatch's 2-core reference machine.")
    in_ci: bool = Field(description="Run end to end by the test suite.")
    measures: dict[str, str] = Field(description="Every measure its checks read, in words.")


class ReproductionList(BaseModel):
    studies: list[StudyPublic]


class ReproductionRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: Annotated[
        dict[str, Any],
        Field(max_length=len(SPEC_PATHS)),
        WithJsonSchema({**OVERRIDES_SCHEMA, "maxProperties": len(SPEC_PATHS)}),
    ] = Field(
        default_factory=dict,
        description="A variant: spec changes applied to every member after the grid (e.g. "
        "`{\"model.type\": \"rnn\"}` puts a tanh RNN where the protocol has an LSTM). Its report says "
        "whether the claim survives them; `{}` runs the protocol as catalogued.",
    )


class CheckOutcomePublic(BaseModel):
    label: str
    measure: str
    member: dict[str, Any]
    experiment_id: str | None = Field(description="The member it read; null when the sweep has none matching.")
    expected: str
    measured_here: Any
    measured: Any = Field(description="What this run measured; null while the member runs.")
    passed: bool | None = Field(description="null while the member has not finished.")
    plots: dict[str, str] = Field(description="Name → URL of the plots that show what was measured.")


class ClaimOutcomePublic(BaseModel):
    sentence: str
    source: str
    paper_value: str
    reproduced: bool | None = Field(description="Every check passed; null while a member it reads runs.")
    checks: list[CheckOutcomePublic]


class ReproductionRunPublic(BaseModel):
    id: str
    study: str
    owner: str
    created_at: datetime
    sweep_id: str
    overrides: dict[str, Any]
    variant: bool = Field(description="Run with overrides: not the protocol as catalogued.")
    status: str = Field(description="queued | running | finished (every member finished).")
    reproduced: bool | None = Field(description="Every claim reproduced; null until every member finished.")
    claims: list[ClaimOutcomePublic]
    links: dict[str, str]
