"""The points estimate, by hand on the issue's own numbers; tests/workers/test_tasks.py
checks it against the points real runs store."""

from __future__ import annotations

import pytest

from service.budgets import estimate_points, run_shape
from service.budgets.points import recorded_steps, series_count
from service.schemas.spec import ExperimentSpec


def _shape(spec: dict, **context: object):
    return run_shape(ExperimentSpec.model_validate(spec, context=context or None).model_dump(mode="json"))


@pytest.mark.parametrize(("steps", "every", "expected"), [(1, 1, 1), (10, 1, 10), (10, 3, 4), (9, 3, 4), (10, 5, 3), (7, 7, 2), (8, 7, 2), (1, 7, 1)])
def test_recorded_steps_include_the_last_one(steps: int, every: int, expected: int) -> None:
    assert recorded_steps(steps, every) == expected
    assert recorded_steps(steps, every) == len([s for s in range(steps) if s % every == 0 or s == steps - 1])


def test_the_issues_64_by_1_mlp_on_digits() -> None:
    # 6 global series, 7 per parameter tensor (65 layers × weight and bias), and
    # backprop_norm, act_mean, act_std, act_saturation per tanh layer, the head's backprop_norm.
    shape = _shape({"model": {"type": "mlp", "hidden_sizes": [1] * 64}, "dataset": {"name": "digits"}, "training": {"steps": 1000}})
    assert series_count(shape) == 6 + 7 * 130 + 4 * 64 + 1 == 1173
    # The issue measured 26 MB per 1,000 steps: 1.17 million points.
    assert estimate_points(shape).total == 1_173_000


def test_identity_has_no_saturation_and_regression_no_accuracy() -> None:
    shape = _shape({"model": {"type": "rnn", "activation": "identity"}, "dataset": {"name": "adding"}, "training": {"steps": 10}})
    assert series_count(shape) == 5 + 7 * 6 + 3 + 1


def test_timesteps_are_thinned_by_timesteps_every_and_max_timesteps() -> None:
    spec = {
        "model": {"type": "lstm", "num_layers": 2},
        "dataset": {"name": "adding", "seq_len": 500},
        "training": {"steps": 99},
        "logging": {"every": 2, "timesteps_every": 5, "max_timesteps": 40},
    }
    points = estimate_points(_shape(spec))
    assert points.recorded_steps == 50 and points.timestep_rows == 10
    assert points.timestep_values == 2 * 40 * 2  # two layers, 40 timesteps, ‖∂L/∂h_t‖ and ‖∂L/∂c_t‖
    assert points.total == points.series * 50 + 10 * 160
