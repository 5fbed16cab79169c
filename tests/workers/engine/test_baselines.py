"""The trivial baseline, measured from the data, against its closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.engine.baselines import trivial_baseline
from workers.engine.datasets import synthetic
from workers.engine.datasets.base import classification


def test_adding_baseline_is_the_constant_predictors_variance() -> None:
    baseline = trivial_baseline(synthetic.load("adding", 50, 20_000, 5_000, 0))
    # Var(u₁ + u₂) = 2 · 1/12 = 1/6 for u ~ U(0, 1); a finite sample lands within its error.
    assert baseline.loss == "mse" and baseline.predictor == "mean target"
    assert baseline.train_loss == pytest.approx(1 / 6, rel=0.02)
    assert baseline.test_loss == pytest.approx(1 / 6, rel=0.04)
    assert baseline.chance_accuracy is None


@pytest.mark.parametrize("delay", [10, 30, 100])
def test_copy_baseline_is_the_memoryless_cross_entropy(delay: int) -> None:
    baseline = trivial_baseline(synthetic.load("copy", delay, 4_000, 1_000, 0))
    # Arjovsky et al. 2016: blanks for delay + 10 steps, then 10 uniform symbols of 8.
    closed_form = 10 * math.log(8) / (delay + 20)
    assert baseline.predictor == "class frequencies per position"
    assert baseline.train_loss == pytest.approx(closed_form, rel=0.005)
    assert baseline.test_loss == pytest.approx(closed_form, rel=0.01)


def test_classification_baseline_is_the_class_prior_entropy_and_chance() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    x = np.zeros((100, 1, 1), dtype=np.float32)
    data = classification(x, labels, x[:10], np.array([0] * 5 + [1] * 5), 3)
    baseline = trivial_baseline(data)
    prior = np.array([0.5, 0.3, 0.2])
    assert baseline.train_loss == pytest.approx(float(-(prior * np.log(prior)).sum()))
    assert baseline.test_loss == pytest.approx(float(-(np.log(0.5) + np.log(0.3)) / 2))
    assert baseline.chance_accuracy == pytest.approx(0.5)  # the commonest class, 0, on the test split
    # Under MSE on one-hot targets, the same frequencies scored as the trainer scores them.
    mse = trivial_baseline(data, loss="mse")
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(labels), 3).double()
    expected = (0.5 * ((one_hot - torch.as_tensor(prior)) ** 2).sum(-1)).mean().item()
    assert mse.loss == "mse" and mse.train_loss == pytest.approx(expected)


def test_a_class_missing_from_training_costs_a_finite_test_loss() -> None:
    x = np.zeros((4, 1, 1), dtype=np.float32)
    data = classification(x, np.array([0, 0, 1, 1]), x[:1], np.array([2]), 3)
    assert math.isfinite(trivial_baseline(data).test_loss)
