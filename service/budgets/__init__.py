"""Budgets: what a whole spec costs (parameters, memory, stored points), checked before
anything is stored. Pure Python (service/ never imports torch): the estimates mirror the
engine's allocations and are tested against real runs."""

from __future__ import annotations

from typing import Any

from service.budgets.checks import check_spec_budgets, spec_budget_problems, sweep_points_problem
from service.budgets.memory import MemoryEstimate, estimate_memory, format_bytes
from service.budgets.parameters import parameter_count
from service.budgets.points import PointsEstimate, estimate_points
from service.budgets.shape import RunShape, run_shape

__all__ = [
    "MemoryEstimate",
    "PointsEstimate",
    "RunShape",
    "check_spec_budgets",
    "estimate_memory",
    "estimate_points",
    "estimate_spec_memory",
    "format_bytes",
    "parameter_count",
    "run_shape",
    "spec_budget_problems",
    "sweep_points_problem",
]


def estimate_spec_memory(spec: dict[str, Any]) -> MemoryEstimate:
    """The memory estimate of a validated spec as JSON (what the experiment row stores)."""
    return estimate_memory(run_shape(spec))
