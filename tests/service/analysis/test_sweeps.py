"""Expanding a grid over dotted spec paths into validated member specs."""

from __future__ import annotations

import pytest

from service.analysis.sweeps import SweepError, expand_grid, member_label, sweep_size
from service.config import Limits

BASE = {
    "name": "mnist-2x30",
    "model": {"type": "mlp", "hidden_sizes": [30, 30]},
    "dataset": {"name": "mnist", "limit": 5000},
    "training": {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": 100},
}
GRID = {"model.activation": ["sigmoid", "tanh", "relu"], "clipping.mode": ["none", "norm"], "training.seed": [0, 1, 2]}


def test_the_issue_grid_makes_eighteen_validated_members_in_product_order() -> None:
    members = expand_grid(BASE, GRID, Limits())
    assert len(members) == 18 == sweep_size(GRID)
    first, second, last = members[0], members[1], members[-1]
    assert first.params == {"model.activation": "sigmoid", "clipping.mode": "none", "training.seed": 0}
    assert second.params["training.seed"] == 1  # the last key varies fastest
    assert last.spec.model.activation == "relu" and last.spec.clipping.mode == "norm"
    assert last.spec.training.seed == 2 and last.spec.training.lr == 0.5
    assert first.spec.name == "mnist-2x30 activation=sigmoid mode=none seed=0"
    # The base is not modified.
    assert "activation" not in BASE["model"] and "clipping" not in BASE


def test_labels_name_only_the_varying_paths() -> None:
    members = expand_grid(BASE, {"model.activation": ["relu", "tanh"], "training.lr": [0.1]}, Limits())
    assert [m.spec.name for m in members] == ["mnist-2x30 activation=relu", "mnist-2x30 activation=tanh"]
    assert all(m.spec.training.lr == 0.1 for m in members)
    assert member_label({"a.b": 1, "c.d": "x"}) == "b=1 d=x"


def test_above_the_cap_is_refused_with_the_limit_named() -> None:
    with pytest.raises(SweepError) as caught:
        expand_grid(BASE, GRID, Limits(max_sweep_size=10))
    [error] = caught.value.errors
    assert error["type"] == "sweep_size"
    assert "18 experiments" in error["msg"] and "10" in error["msg"] and "GRADWATCH_LIMIT_MAX_SWEEP_SIZE" in error["msg"]


def test_an_invalid_member_names_its_parameters_and_field() -> None:
    with pytest.raises(SweepError) as caught:
        expand_grid(BASE, {"model.hidden_sizes": [[30], [5000]]}, Limits())
    messages = [e["msg"] for e in caught.value.errors]
    assert any("hidden_sizes=[5000]" in m and "4096" in m for m in messages), messages
    assert caught.value.errors[0]["loc"][:3] == ["body", "base", "model"]


def test_unknown_paths_and_empty_values_are_refused() -> None:
    with pytest.raises(SweepError, match="nonsense"):
        expand_grid(BASE, {"model.nonsense": [1, 2]}, Limits())
    with pytest.raises(SweepError, match="non-empty list"):
        expand_grid(BASE, {"model.activation": []}, Limits())
    with pytest.raises(SweepError, match="empty"):
        expand_grid(BASE, {}, Limits())
    with pytest.raises(SweepError, match="not a section"):
        expand_grid(BASE, {"training.lr.value": [1]}, Limits())
