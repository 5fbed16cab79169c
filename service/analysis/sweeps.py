"""Expand a sweep: one experiment spec per combination of the grid's values.

A grid maps dotted spec paths to lists of values, e.g.
`{"model.activation": ["sigmoid", "relu"], "training.seed": [0, 1]}` → four members.
Each member is validated as a whole `ExperimentSpec`, so a combination that cannot train
(a `relu` LSTM, a batch larger than the dataset) is refused before anything is created,
with the member's parameters in the message.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from service.budgets import sweep_points_problem
from service.config import Limits
from service.schemas.documents import unstorable_values
from service.schemas.spec import ExperimentSpec
from service.schemas.sweeps import SPEC_PATHS

# The grid key that `compare` aggregates over rather than labels by.
SEED_PATH = "training.seed"


class SweepError(ValueError):
    """The sweep cannot be created; `errors` are 422-ready (loc, msg, type) entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class SweepMember:
    params: dict[str, Any]  # dotted path → this member's value, one per grid key
    spec: ExperimentSpec


def sweep_size(grid: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(values) for values in grid.values())


def member_label(params: Mapping[str, Any], include: Sequence[str] | None = None) -> str:
    """`activation=relu seed=1`: each path's last component and its value, in grid order."""
    keys = [key for key in params if include is None or key in include]
    return " ".join(f"{key.rsplit('.', 1)[-1]}={params[key]}" for key in keys)


def expand_grid(
    base: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    limits: Limits,
    overrides: Mapping[str, Any] | None = None,
) -> list[SweepMember]:
    """Every combination of `grid` applied to `base`, validated; raises SweepError.

    `overrides` (dotted path → value, a reproduction's variant) are applied to every member
    after the grid, so a member keeps its grid params while its spec changes.

    Members come in the order of `itertools.product` over the grid's keys as given, so
    the last key (often the seed) varies fastest. Each member is named
    `<base name> <label>` unless the grid sets `name` itself.
    """
    # The base and grid are stored as sent, so every value in them must be storable (no
    # NUL, no integer beyond 64 bits), even one the grid overrides.
    errors = unstorable_values(dict(base), ("body", "base")) + unstorable_values(dict(grid), ("body", "grid"))
    errors += _check_grid(grid, limits)
    overrides = dict(overrides or {})
    errors += unstorable_values(overrides, ("body", "overrides"))
    errors += [
        {"loc": ["body", "overrides", path], "msg": _unknown_path(path), "type": "value_error"}
        for path in overrides
        if path not in SPEC_PATHS or path.split(".", 1)[0] == "tags"
    ]
    if errors:
        raise SweepError(errors)
    keys = list(grid)
    base_name = str(base.get("name") or "")
    members = []
    for combination in itertools.product(*(grid[key] for key in keys)):
        params = dict(zip(keys, combination, strict=True))
        spec = copy.deepcopy(dict(base))
        for path, value in (*params.items(), *overrides.items()):
            _set_path(spec, path, value)
        if "name" not in params:
            label = member_label(params, [key for key in keys if len(grid[key]) > 1]) or member_label(params)
            spec["name"] = f"{base_name} {label}".strip()[: limits.max_name_length]
        try:
            validated = ExperimentSpec.model_validate(spec, context={"limits": limits})
        except ValidationError as error:
            for item in error.errors(include_url=False):
                errors.append(
                    {
                        "loc": ["body", "base", *item["loc"]],
                        "msg": f"the sweep member {member_label(params)}: {item['msg']}",
                        "type": item["type"],
                    }
                )
            if len(errors) >= 10:  # enough to act on; the rest likely repeat
                break
            continue
        members.append(SweepMember(params=params, spec=validated))
    if not errors:
        problem = sweep_points_problem((member.spec.model_dump(mode="json") for member in members), limits)
        if problem:
            errors.append({"loc": ["body", "grid"], "msg": problem, "type": "budget_exceeded"})
    if errors:
        raise SweepError(errors)
    return members


def _check_grid(grid: Mapping[str, Sequence[Any]], limits: Limits) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    if not grid:
        errors.append({"loc": ["body", "grid"], "msg": "the grid is empty: give at least one path and its values", "type": "value_error"})
    for path, values in grid.items():
        if path.split(".", 1)[0] == "tags":
            errors.append({"loc": ["body", "grid", path], "msg": "tags cannot be swept; put them in the base spec", "type": "value_error"})
        elif path not in SPEC_PATHS:
            errors.append({"loc": ["body", "grid", path], "msg": _unknown_path(path), "type": "value_error"})
        if not isinstance(values, list) or not values:
            errors.append({"loc": ["body", "grid", path], "msg": f"give '{path}' a non-empty list of values", "type": "value_error"})
    size = sweep_size(grid) if not errors else 0
    if size > limits.max_sweep_size:
        errors.append(
            {
                "loc": ["body", "grid"],
                "msg": (
                    f"the grid makes {size} experiments ({' × '.join(str(len(v)) for v in grid.values())}), "
                    f"above the limit {limits.max_sweep_size} (max_sweep_size; the server's "
                    "GRADWATCH_LIMIT_MAX_SWEEP_SIZE raises it)"
                ),
                "type": "sweep_size",  # the product of the lists: no schema bound can state it
            }
        )
    return errors


def _unknown_path(path: str) -> str:
    parts = path.split(".")
    for end in range(1, len(parts)):
        prefix = ".".join(parts[:end])
        if SPEC_PATHS.get(prefix) is False:
            return f"'{parts[end - 1]}' in '{path}' is a value, not a section"
    return (
        f"'{path}' is not a dotted spec path such as 'model.activation'; the paths are: "
        + ", ".join(SPEC_PATHS)
    )


def _set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, creating sections the base left to their defaults."""
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise SweepError(
                [{"loc": ["body", "grid", path], "msg": f"'{part}' in '{path}' is a value, not a section", "type": "not_a_section"}]
            )
        else:
            child = node[part] = dict(child)
        node = child
    node[leaf] = value
