"""Downsampling keeps the points a researcher must see, within the budget, for every size."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.downsample import AGGREGATIONS, downsample

REDUCING = [agg for agg in AGGREGATIONS if agg != "none"]


def _random_walk(rng: np.random.Generator, n: int, nonfinite: bool) -> tuple[np.ndarray, np.ndarray]:
    """A gradient-norm-like walk with spikes, and optionally NaN/Inf, on irregular steps."""
    steps = np.cumsum(rng.integers(1, 4, size=n)).astype(np.int64)
    values = np.cumsum(rng.standard_normal(n))
    spikes = rng.choice(n, size=min(n, 3), replace=False)
    values[spikes] += rng.choice([-1.0, 1.0], size=len(spikes)) * 1e6
    if nonfinite:
        for bad in (np.nan, np.inf, -np.inf, np.nan):
            values[rng.integers(0, n)] = bad
    return steps, values


def _assert_keeps_what_matters(steps, values, out_steps, out_values, max_points):
    assert len(out_steps) == len(out_values) <= max_points
    assert np.all(np.diff(out_steps) > 0), "steps must be unique and ascending"
    # Every returned point is a real point of the series, at its own step (NaN == NaN here).
    position = np.searchsorted(steps, out_steps)
    assert np.array_equal(steps[position], out_steps)
    kept = set(out_steps.tolist())
    assert steps[0] in kept and steps[-1] in kept
    finite = np.isfinite(values)
    if finite.any():
        # The global extremes, at their own steps, with their own values (the walk has no ties).
        for extreme in (np.argmax(values[finite]), np.argmin(values[finite])):
            step, value = steps[finite][extreme], values[finite][extreme]
            assert step in kept, f"extreme {value} at step {step} dropped"
            assert out_values[np.searchsorted(out_steps, step)] == value
    for mask in (np.isnan(values), values == np.inf, values == -np.inf):
        if mask.any():
            assert steps[mask][0] in kept, "the first NaN, +Inf and -Inf must stay visible"


@pytest.mark.parametrize("agg", REDUCING)
def test_random_walks_of_many_sizes_keep_extremes_within_budget(agg: str) -> None:
    rng = np.random.default_rng(1234)
    for trial in range(300):
        n = int(rng.integers(1, 5000))
        max_points = int(rng.integers(7, 400))
        steps, values = _random_walk(rng, n, nonfinite=trial % 2 == 1)
        out_steps, out_values = downsample(steps, values, max_points, agg)
        _assert_keeps_what_matters(steps, values, out_steps, out_values, max_points)
        if agg == "minmax":
            # M4 returns real points, each at its own step, with its own value.
            position = np.searchsorted(steps, out_steps)
            assert np.array_equal(values[position], out_values, equal_nan=True)


def test_a_thousand_steps_asked_for_a_hundred_points() -> None:
    """The issue's case: ≤ 100 points, global max and min at their exact steps, ends kept."""
    rng = np.random.default_rng(7)
    steps = np.arange(1000, dtype=np.int64)
    values = np.abs(np.cumsum(rng.standard_normal(1000))) + 1.0
    values[613] = 250.0  # an exploding step
    values[88] = 1e-9  # a vanishing one
    for agg in REDUCING:
        out_steps, out_values = downsample(steps, values, 100, agg)
        assert len(out_steps) <= 100
        assert 613 in out_steps and out_values[out_steps.tolist().index(613)] == 250.0
        assert 88 in out_steps and out_values[out_steps.tolist().index(88)] == 1e-9
        assert out_steps[0] == 0 and out_steps[-1] == 999


def test_minmax_keeps_every_bucket_extreme_of_a_spiky_series() -> None:
    steps = np.arange(10_000, dtype=np.int64)
    values = np.zeros(10_000)
    spikes = np.arange(50, 10_000, 400)  # 25 spikes, one per 100-point bucket at most
    values[spikes] = 1.0 + np.arange(len(spikes))
    out_steps, _ = downsample(steps, values, 400, "minmax")
    assert set(spikes.tolist()) <= set(out_steps.tolist())


def test_nan_and_inf_are_kept_and_finite_extremes_still_shown() -> None:
    steps = np.arange(1000, dtype=np.int64)
    values = np.linspace(1.0, 2.0, 1000)
    values[300] = np.nan
    values[301] = np.inf
    values[700] = -np.inf
    values[500] = 99.0  # finite maximum, beside the +Inf
    for agg in REDUCING:
        out_steps, out_values = downsample(steps, values, 40, agg)
        assert len(out_steps) <= 40
        assert {300, 301, 700, 500, 0, 999} <= set(out_steps.tolist()), agg


def test_divergence_at_the_end_is_kept_in_a_mean_series() -> None:
    steps = np.arange(2000, dtype=np.int64)
    values = np.ones(2000)
    values[1990:] = np.nan
    out_steps, out_values = downsample(steps, values, 50, "mean")
    assert len(out_steps) <= 50
    assert 1990 in out_steps and np.isnan(out_values[-1])
    assert np.allclose(out_values[:10], 1.0)


def test_mean_averages_each_bucket() -> None:
    steps = np.arange(1000, dtype=np.int64)
    values = np.repeat(np.arange(10, dtype=np.float64), 100)  # a staircase
    values[150] = 5.0  # lifts the second stair's mean by 4/100
    # Must keep: first (0, also the minimum), maximum (900), last (999); ten buckets of 100.
    out_steps, out_values = downsample(steps, values, 13, "mean")
    assert out_steps.tolist() == [0, 50, 150, 250, 350, 450, 550, 650, 750, 850, 900, 950, 999]
    assert np.allclose(out_values, [0, 0, 1.04, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9])


def test_within_budget_and_none_return_the_series_unchanged() -> None:
    steps = np.arange(10, dtype=np.int64)
    values = np.arange(10, dtype=np.float64)
    for agg in AGGREGATIONS:
        out_steps, out_values = downsample(steps, values, 10, agg)
        assert out_steps is steps and out_values is values
    assert downsample(steps, values, None)[0] is steps
    assert len(downsample(steps, values, 3, "none")[0]) == 10


@pytest.mark.parametrize("max_points", [1, 2, 3])
def test_tiny_budgets_keep_the_extremes_first(max_points: int) -> None:
    steps = np.arange(100, dtype=np.int64)
    values = np.sin(np.arange(100.0))
    out_steps, out_values = downsample(steps, values, max_points, "minmax")
    assert len(out_steps) == max_points
    assert values.max() in out_values
    if max_points >= 2:
        assert values.min() in out_values


def test_all_nan_series() -> None:
    steps = np.arange(500, dtype=np.int64)
    values = np.full(500, np.nan)
    for agg in REDUCING:
        out_steps, out_values = downsample(steps, values, 20, agg)
        assert 0 < len(out_steps) <= 20 and np.isnan(out_values).all()
        assert out_steps[0] == 0 and out_steps[-1] == 499


def test_bad_arguments_say_what_is_wrong() -> None:
    steps = np.arange(10, dtype=np.int64)
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        downsample(steps, steps.astype(float), 5, "median")
    with pytest.raises(ValueError, match="at least 1"):
        downsample(steps, steps.astype(float), 0)
    with pytest.raises(ValueError, match="same length"):
        downsample(steps, np.zeros(3), 5)
