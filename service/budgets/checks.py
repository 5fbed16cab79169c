"""The budget checks: a whole spec (or sweep) against the server's `Limits`.

Each exceeded budget is one sentence naming the estimate, the limit, the setting that
raises it, and what in the spec to lower; the spec's validator raises them as one 422.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic_core import PydanticCustomError

from service.budgets.memory import estimate_memory, format_bytes
from service.budgets.parameters import parameter_count
from service.budgets.points import estimate_points
from service.budgets.shape import run_shape
from service.config import Limits


def _above(limit_name: str, limit: str) -> str:
    return f"above the limit {limit} ({limit_name}; the server's GRADWATCH_LIMIT_{limit_name.upper()} raises it)"


def spec_budget_problems(spec: dict[str, Any], limits: Limits) -> list[str]:
    """One message per budget the validated spec (as JSON) exceeds; empty when it fits."""
    shape = run_shape(spec)
    problems = []
    parameters = parameter_count(shape)
    if parameters > limits.max_parameters:
        problems.append(
            f"the network has {parameters:,} parameters, {_above('max_parameters', f'{limits.max_parameters:,}')}: "
            "use fewer or narrower layers"
        )
    memory = estimate_memory(shape)
    if memory.total > limits.max_run_memory_bytes:
        problems.append(
            f"the run needs an estimated {format_bytes(memory.total)} ({memory.total:,} bytes) of memory on its "
            f"device ({memory.describe()}), "
            f"{_above('max_run_memory_bytes', f'{format_bytes(limits.max_run_memory_bytes)} ({limits.max_run_memory_bytes:,} bytes)')}: "
            "lower training.batch_size, dataset.limit, dataset.seq_len or the model's size"
        )
    points = estimate_points(shape)
    if points.total > limits.max_points_per_experiment:
        problems.append(
            f"the run would store an estimated {points.total:,} points ({points.describe()}), "
            f"{_above('max_points_per_experiment', f'{limits.max_points_per_experiment:,}')}: "
            "record less often (logging.every, logging.timesteps_every), train fewer steps or use a smaller model"
        )
    return problems


def check_spec_budgets(spec: dict[str, Any], limits: Limits) -> None:
    """Raise a 422-ready error listing every budget the spec exceeds."""
    problems = spec_budget_problems(spec, limits)
    if problems:
        raise PydanticCustomError("budget_exceeded", "{problems}", {"problems": "; ".join(problems)})


def sweep_points_problem(specs: Iterable[dict[str, Any]], limits: Limits) -> str | None:
    """The message when the members together would store more than max_points_per_sweep."""
    totals = [estimate_points(run_shape(spec)).total for spec in specs]
    total = sum(totals)
    if total <= limits.max_points_per_sweep:
        return None
    return (
        f"the sweep's {len(totals)} members would store an estimated {total:,} points together "
        f"(the largest member {max(totals):,}), {_above('max_points_per_sweep', f'{limits.max_points_per_sweep:,}')}: "
        "sweep fewer values, or record less often (logging.every) in the base spec"
    )
