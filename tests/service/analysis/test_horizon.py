"""The memory horizon: how many timesteps back ‖∂L/∂h_t‖ stays ≥ 1e-3·‖∂L/∂h_T‖."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.horizon import final_horizon, memory_horizon
from service.store.records import TimestepData


def _data(norms: np.ndarray, timesteps: np.ndarray | None = None) -> TimestepData:
    norms = np.atleast_2d(np.asarray(norms, dtype=np.float64))
    if timesteps is None:
        timesteps = np.arange(norms.shape[1])
    return TimestepData(0, np.arange(norms.shape[0], dtype=np.int64) * 10, np.asarray(timesteps), norms)


def test_geometric_decay_gives_the_analytic_horizon() -> None:
    back = np.arange(49, -1, -1)  # timesteps 0..49, distance from T
    for rho, expected in ((0.5, 9), (0.7, 19), (0.9, 49)):
        # rho**k ≥ 1e-3 ⇔ k ≤ log(1e-3)/log(rho): 9.97, 19.4, 65.6 (capped at 49).
        layer = memory_horizon(_data(rho**back))
        assert layer.horizon[0] == expected, rho
        assert layer.reaches_start[0] == (expected == 49)
        assert layer.first_to_last[0] == pytest.approx(rho**49)
        assert layer.max_horizon == 49


def test_a_dip_ends_the_horizon_even_if_the_norm_recovers_earlier() -> None:
    norms = np.ones(10)
    norms[6] = 1e-5  # 3 timesteps back from t = 9
    layer = memory_horizon(_data(norms))
    assert layer.horizon[0] == 2 and not layer.reaches_start[0]


def test_recorded_subset_of_timesteps_counts_real_timesteps() -> None:
    timesteps = np.array([0, 100, 200, 300, 999])
    norms = np.array([1e-9, 1e-2, 1e-2, 0.5, 1.0])
    layer = memory_horizon(_data(norms, timesteps))
    assert layer.horizon[0] == 999 - 100 and layer.max_horizon == 999


def test_zero_or_nonfinite_last_norm_leaves_the_horizon_undefined() -> None:
    norms = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, np.nan], [1.0, np.inf, 1.0], [1.0, 1.0, 1.0]])
    layer = memory_horizon(_data(norms))
    assert np.isnan(layer.horizon[0]) and np.isnan(layer.horizon[1])
    assert layer.horizon[2] == 0  # an infinite norm one step back breaks the chain
    assert layer.horizon[3] == 2 and layer.reaches_start[3]
    assert not layer.reaches_start[0] and not layer.reaches_start[1]


def test_final_horizon_is_the_median_over_the_last_steps() -> None:
    back = np.arange(49, -1, -1)
    rows = [0.9**back] * 90 + [0.5**back] * 10  # training ends with a short horizon
    layer = memory_horizon(_data(np.array(rows)))
    assert final_horizon(layer, 0.1) == 9
    assert final_horizon(layer, 1.0) == 49


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="hidden_grad_norm"):
        memory_horizon(TimestepData(0, np.arange(2), np.arange(3), np.ones((2, 4))))
