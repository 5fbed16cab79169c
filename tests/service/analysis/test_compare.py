"""Sweep comparison: members aligned on step, labelled by what varies, seeds aggregated."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.compare import MemberSeries, compare
from service.store.records import SeriesData

GRID = {"model.activation": ["sigmoid", "tanh", "relu"], "training.seed": [0, 1], "clipping.mode": ["none"]}


def _members(n_steps: int = 100) -> list[MemberSeries]:
    members = []
    for a, activation in enumerate(GRID["model.activation"]):
        for seed in GRID["training.seed"]:
            # Member (a, seed) measures 10**a + seed at every step; seed 1 skips step 0.
            steps = np.arange(seed, n_steps, dtype=np.int64)
            values = np.full(len(steps), 10.0**a + seed)
            params = {"model.activation": activation, "training.seed": seed, "clipping.mode": "none"}
            members.append(
                MemberSeries(f"id-{activation}-{seed}", f"run {activation} {seed}", "succeeded", params,
                             SeriesData("layers.0.weight", 0, steps, values))
            )
    return members


def test_six_members_aligned_labelled_and_seed_aggregated() -> None:
    comparison = compare("grad_mean_abs", None, GRID, _members())
    assert comparison.varying == ["model.activation", "training.seed"]
    assert comparison.steps.tolist() == list(range(100))
    assert len(comparison.members) == 6
    assert [m.label for m in comparison.members][:2] == ["activation=sigmoid seed=0", "activation=sigmoid seed=1"]
    seed1 = comparison.members[1]
    assert np.isnan(seed1.values[0]) and seed1.values[1] == 2.0  # aligned: missing step 0
    assert [g.label for g in comparison.groups] == ["activation=sigmoid", "activation=tanh", "activation=relu"]
    relu = comparison.groups[2]
    assert relu.seeds == [0, 1] and relu.experiment_ids == ["id-relu-0", "id-relu-1"]
    assert relu.mean[0] == 100.0 and relu.count[0] == 1  # only seed 0 measured step 0
    assert relu.mean[5] == 100.5 and relu.minimum[5] == 100.0 and relu.maximum[5] == 101.0
    assert relu.count[5] == 2


def test_downsampled_comparison_shares_one_step_axis() -> None:
    comparison = compare("grad_mean_abs", None, GRID, _members(1000), max_points=50)
    assert comparison.downsampled and len(comparison.steps) == 50
    assert all(len(m.values) == 50 for m in comparison.members)
    assert all(len(g.mean) == 50 for g in comparison.groups)
    assert comparison.groups[0].mean[10] == pytest.approx(1.5)


def test_members_without_data_and_non_finite_values() -> None:
    members = _members(10)
    diverged = members[5].series
    assert diverged is not None
    values = diverged.values.copy()
    values[3:] = np.nan
    members[5] = MemberSeries(members[5].experiment_id, members[5].name, "diverged", members[5].params,
                              SeriesData(diverged.layer, 0, diverged.steps, values))
    members[4] = MemberSeries(members[4].experiment_id, members[4].name, "queued", members[4].params, None)
    comparison = compare("loss", None, GRID, members)
    relu = comparison.groups[2]
    assert np.isnan(comparison.members[4].values).all()
    # Step 8: seed 0 has no data (queued), seed 1 diverged (NaN): nothing to average.
    assert relu.count[8] == 0 and np.isnan(relu.mean[8])
    assert relu.count[2] == 1 and relu.mean[2] == 101.0


def test_when_only_the_seed_varies_there_is_one_group() -> None:
    grid = {"training.seed": [0, 1, 2]}
    members = [
        MemberSeries(f"m{s}", f"m{s}", "succeeded", {"training.seed": s},
                     SeriesData(None, -1, np.arange(5), np.full(5, float(s))))
        for s in grid["training.seed"]
    ]
    comparison = compare("loss", None, grid, members)
    [group] = comparison.groups
    assert group.label == "" and np.allclose(group.mean, 1.0)
    assert [m.label for m in comparison.members] == ["seed=0", "seed=1", "seed=2"]
