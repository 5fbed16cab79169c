"""What `GET /api/v1/compare` returns: any experiments on one metric and layer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.schemas.experiments import ExperimentResult
from service.schemas.sweeps import ComparedMember, SeedGroup


class ComparedSummary(BaseModel):
    """The headline of the experiment's `/summary` (fetch that for the evidence)."""

    verdict: Literal["vanishing", "exploding", "healthy"]
    headline: str = Field(description="The first finding's message, or why the verdict is healthy.")
    findings: list[str] = Field(description="The kinds of every finding, in the summary's order.")
    result: ExperimentResult | None = Field(description="What the worker reported at the end (null while running).")


class ComparedExperiment(ComparedMember):
    params: dict[str, Any] = Field(description="This experiment's value of each differing spec field.")
    label: str = Field(description="The differing spec fields, e.g. `type=lstm lr=0.01` (its name when none differ).")
    summary: ComparedSummary


class ExperimentsCompareResponse(BaseModel):
    metric: str = Field(description="The metric drawn.")
    layer: str | None = Field(
        description="The layer asked for; null: each experiment's input-most layer (each member's `layer` says which "
        "it drew), or a global metric."
    )
    varying: list[str] = Field(description="Dotted spec paths whose values differ between the experiments.")
    steps: list[int]
    members: list[ComparedExperiment] = Field(description="In the order of `ids`.")
    groups: list[SeedGroup] = Field(description="Experiments that differ only by `training.seed`: mean and min–max band.")
    downsampled: bool
