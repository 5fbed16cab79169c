"""What sets experiments apart: the spec fields whose values differ between them.

A comparison of runs submitted separately (an `rnn` and an `lstm` on the adding problem)
has no grid to label its curves by; the fields that differ play the grid's part, so the
same labels and seed groups as a sweep's comparison follow (service/analysis/compare.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Fields that name or route a run rather than change what it trains: never a label.
NOT_LABELS = ("name", "tags", "notify", "queue")
_MISSING = "—"  # how a field one spec lacks shows in a label


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"type": "rnn"}}` → `{"model.type": "rnn"}`; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def differing_fields(specs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """(grid, params): each differing dotted path → its distinct values in first-seen
    order, and per spec its value of each such path, paths in the order the specs hold them."""
    flat = [{k: v for k, v in flatten(spec).items() if k.split(".", 1)[0] not in NOT_LABELS} for spec in specs]
    paths = list(dict.fromkeys(path for fields in flat for path in fields))
    grid: dict[str, list[Any]] = {}
    for path in paths:
        values = [fields.get(path, _MISSING) for fields in flat]
        distinct: list[Any] = []
        for value in values:
            if value not in distinct:
                distinct.append(value)
        if len(distinct) > 1:
            grid[path] = distinct
    params = [{path: fields.get(path, _MISSING) for path in grid} for fields in flat]
    return grid, params
