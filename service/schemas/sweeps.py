"""Sweeps: what `POST /api/v1/sweeps` takes and what the sweep endpoints return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.experiments import ExperimentResult, Progress
from service.schemas.notify import NotifySpec

SWEEP_EXAMPLE = {
    "name": "activations",
    "base": {
        "name": "mnist-2x30",
        "model": {"type": "mlp", "hidden_sizes": [30, 30], "init": {"scheme": "xavier_uniform"}},
        "dataset": {"name": "mnist", "limit": 5000},
        "training": {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": 200},
    },
    "grid": {"model.activation": ["sigmoid", "tanh", "relu"], "training.seed": [0, 1]},
}


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SWEEP_EXAMPLE]})

    name: str | None = Field(None, min_length=1, max_length=200, description="Default: the base spec's name.")
    base: dict[str, Any] = Field(description="An ExperimentSpec; each member is this spec with the grid applied.")
    grid: dict[str, list[Any]] = Field(
        description="Dotted spec path → values. One experiment per combination, validated as an "
        "ExperimentSpec; at most GRADWATCH_LIMIT_MAX_SWEEP_SIZE of them. `training.seed` is "
        "averaged over by `compare`."
    )
    notify: NotifySpec | None = Field(
        None,
        description="POST one signed event when every member has ended (a `notify` in `base` "
        "announces each member instead).",
    )


class SweepMemberPublic(BaseModel):
    id: str
    name: str
    status: str
    params: dict[str, Any] = Field(description="This member's value of each grid path.")
    label: str = Field(description="The varying grid values, e.g. `activation=relu seed=1`.")
    progress: Progress
    result: ExperimentResult | None
    error: str | None


class SweepPublic(BaseModel):
    id: str
    name: str
    owner: str = Field(description="Who created it; its members belong to the same owner.")
    created_at: datetime
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    varying: list[str] = Field(description="Grid paths with more than one value.")
    size: int
    status: str = Field(description="queued | running | finished: finished once every member is.")
    status_counts: dict[str, int]
    members: list[SweepMemberPublic] = Field(description="In grid order (the last path varies fastest).")


class ComparedMember(BaseModel):
    experiment_id: str
    name: str
    status: str
    label: str
    params: dict[str, Any]
    layer: str | None
    values: list[float | None] = Field(description="On `steps`; null where not measured or non-finite.")


class SeedGroup(BaseModel):
    label: str = Field(description="The varying grid values other than the seed.")
    params: dict[str, Any]
    experiment_ids: list[str]
    seeds: list[Any]
    mean: list[float | None] = Field(description="Mean over the group's seeds with a finite value.")
    minimum: list[float | None]
    maximum: list[float | None]
    count: list[int] = Field(description="Members with a finite value at each step.")


class CompareResponse(BaseModel):
    sweep_id: str
    metric: str
    layer: str | None
    varying: list[str]
    steps: list[int]
    members: list[ComparedMember]
    groups: list[SeedGroup]
    downsampled: bool
