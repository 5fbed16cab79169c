"""The depth profile: a step × layer matrix, thinned on the same steps for every layer."""

from __future__ import annotations

import numpy as np

from service.analysis.profile import depth_profile
from service.store.records import SeriesData


def _layers(n_steps: int = 1000) -> list[SeriesData]:
    steps = np.arange(n_steps, dtype=np.int64)
    return [
        SeriesData(f"layers.{i}.weight", i, steps, np.full(n_steps, 10.0**i)) for i in (2, 0, 1)
    ] + [SeriesData(None, -1, steps, np.ones(n_steps))]


def test_columns_are_layers_input_first_and_globals_are_left_out() -> None:
    profile = depth_profile("grad_mean_abs", _layers(20))
    assert profile.layers == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    assert profile.values.shape == (20, 3)
    assert np.array_equal(profile.values[0], [1.0, 10.0, 100.0])
    assert not profile.downsampled


def test_downsampling_averages_the_same_buckets_in_every_layer() -> None:
    series = _layers(1000)
    ramp = SeriesData("layers.3.weight", 3, series[0].steps, np.arange(1000.0))
    profile = depth_profile("grad_mean_abs", [*series, ramp], max_points=10)
    assert profile.downsampled and profile.values.shape == (10, 4)
    assert profile.steps.tolist() == list(range(0, 1000, 100))
    assert np.allclose(profile.values[:, 3], np.arange(10) * 100 + 49.5)  # bucket means
    assert np.allclose(profile.values[:, 0], 1.0)


def test_misaligned_layers_and_nonfinite_cells() -> None:
    a = SeriesData("a", 0, np.array([0, 1, 2, 3]), np.array([1.0, 2.0, np.inf, 4.0]))
    b = SeriesData("b", 1, np.array([2, 3, 4, 5]), np.array([5.0, 6.0, 7.0, 8.0]))
    profile = depth_profile("grad_norm", [a, b])
    assert profile.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.isnan(profile.values[0, 1]) and np.isinf(profile.values[2, 0])
    thinned = depth_profile("grad_norm", [a, b], max_points=3)
    # Buckets {0,1}, {2,3}, {4,5}: the Inf makes its cell Inf; a missing value is skipped.
    assert thinned.values[0].tolist()[0] == 1.5 and np.isnan(thinned.values[0, 1])
    assert np.isinf(thinned.values[1, 0]) and thinned.values[1, 1] == 5.5
    assert np.isnan(thinned.values[2, 0]) and thinned.values[2, 1] == 7.5


def test_no_per_layer_series() -> None:
    profile = depth_profile("loss", [SeriesData(None, -1, np.arange(3), np.ones(3))])
    assert profile.layers == [] and profile.values.shape == (0, 0)
