"""Sweeps: what `POST /api/v1/sweeps` takes and what the sweep endpoints return."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from service.schemas.documents import STORABLE_JSON_REF
from service.schemas.experiments import ExperimentResult, Progress
from service.schemas.limits import LIMIT_EXTENSION, AtMost, current_limits
from service.schemas.notify import NotifySpec
from service.schemas.spec import ExperimentSpec
from service.schemas.text import SafeStr

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


def _spec_paths(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Every field of the spec as a dotted path → whether it is a section (a sub-model)."""
    paths: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        section = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        paths[path] = section
        if section:
            paths.update(_spec_paths(field.annotation, f"{path}."))  # type: ignore[arg-type]
    return paths


# What a grid may vary: every spec field and section but `tags` (they label, not train).
SPEC_PATHS = {path: section for path, section in _spec_paths(ExperimentSpec).items() if path != "tags"}

GRID_DESCRIPTION = (
    "Dotted spec path → values. One experiment per combination, validated as an ExperimentSpec; at most "
    "GRADWATCH_LIMIT_MAX_SWEEP_SIZE of them in all (the product of the lists' lengths; 422 above it). "
    "`training.seed` is averaged over by `compare`."
)
# What the schema states: the keys, the lists' lengths, and values every store can keep
# (service/schemas/documents.py). That each member is a valid spec, and the product of the
# lists' lengths, are checked by the server (422): no JSON schema can state them.
BASE_SCHEMA = {
    "type": "object",
    "description": "An ExperimentSpec; each member is this spec with the grid applied.",
    "propertyNames": {"enum": list(ExperimentSpec.model_fields)},
    "additionalProperties": STORABLE_JSON_REF,
}
GRID_SCHEMA = {
    "type": "object",
    "description": GRID_DESCRIPTION,
    "minProperties": 1,
    "propertyNames": {"enum": list(SPEC_PATHS)},
    "additionalProperties": {
        "type": "array",
        "minItems": 1,
        "maxItems": current_limits().max_sweep_size,
        LIMIT_EXTENSION: {"maxItems": "max_sweep_size"},
        "items": STORABLE_JSON_REF,
    },
}
GridValues = Annotated[list[Any], Field(min_length=1), AtMost("max_sweep_size", "a list of ", "maxItems")]


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SWEEP_EXAMPLE]})

    name: Annotated[SafeStr, Field(min_length=1), AtMost("max_name_length", "a name length of ", "maxLength")] | None = (
        Field(None, description="Default: the base spec's name.")
    )
    base: Annotated[dict[str, Any], WithJsonSchema(BASE_SCHEMA)]
    grid: Annotated[dict[str, GridValues], Field(min_length=1), WithJsonSchema(GRID_SCHEMA)]
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


class SweepOverview(BaseModel):
    """A sweep as the list shows it: its grid and how far its members are."""

    id: str
    name: str
    owner: str = Field(description="Who created it; its members belong to the same owner.")
    created_at: datetime
    grid: dict[str, list[Any]]
    varying: list[str] = Field(description="Grid paths with more than one value.")
    size: int = Field(description="Members that still exist (deleted ones are gone).")
    status: str = Field(description="queued | running | finished: finished once every member is.")
    status_counts: dict[str, int]


class SweepList(BaseModel):
    items: list[SweepOverview]
    total: int = Field(description="Sweeps matching the filters, on every page.")
    offset: int
    limit: int


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
    layer: str | None = Field(description="The layer this member's curve was drawn from (null: a global metric).")
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
    layer: str | None = Field(
        description="The layer asked for; null: each member's input-most layer (each member's `layer` says which "
        "it drew), or a global metric."
    )
    varying: list[str]
    steps: list[int]
    members: list[ComparedMember]
    groups: list[SeedGroup]
    downsampled: bool
