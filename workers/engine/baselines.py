"""The trivial baseline of a task: the best predictor that never looks at the input.

A model "learned" only if it beats this. The predictor may know the output position (the
copy task's blanks come at fixed steps) but not the sequence it reads, so it predicts, per
output position, what minimises the loss over the training targets:

- regression under MSE: the mean target; its loss is the targets' variance (adding: the
  constant predictor, Var(u₁ + u₂) = 1/6 ≈ 0.167);
- classification under cross-entropy: the class frequencies; its loss is their entropy
  (the class prior's entropy; copy: the memoryless model's 10·ln 8 / (T + 20),
  Arjovsky, Shah & Bengio 2016, Section 4.1);
- classification under MSE on one-hot targets: the same frequencies, scored by MSE;
- chance accuracy: always answering the most frequent class.

It is fitted on the training split and scored on both, from the very tensors the run
trains on, so a stratified subset or a generated task's finite sample is measured exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .datasets import TaskData


@dataclass(frozen=True)
class TrivialBaseline:
    predictor: str  # "mean target" | "class frequencies" (per output position for many-to-many tasks)
    loss: str  # "mse" | "cross_entropy": the loss it is scored with, the run's own
    train_loss: float
    test_loss: float
    chance_accuracy: float | None  # on the test split, answering the training split's commonest class


def trivial_baseline(data: TaskData, loss: str | None = None) -> TrivialBaseline:
    """The input-blind baseline of `data` under `loss` (default: MSE for regression,
    cross-entropy for classification). Reads the tensors on the host, once, before training."""
    train_y = data.train_y.detach().cpu().numpy()  # (N,) or (N, T)
    test_y = data.test_y.detach().cpu().numpy()
    if data.task == "regression":
        mean = train_y.astype(np.float64).mean(axis=0)  # per position when targets are per step
        return TrivialBaseline(
            predictor="mean target",
            loss="mse",
            train_loss=float(np.mean((train_y - mean) ** 2)),
            test_loss=float(np.mean((test_y - mean) ** 2)),
            chance_accuracy=None,
        )
    classes = data.num_outputs
    frequencies = _class_frequencies(train_y, classes)  # (K,) or (T, K)
    loss = loss or "cross_entropy"
    if loss == "mse":
        train_loss, test_loss = _one_hot_mse(train_y, frequencies), _one_hot_mse(test_y, frequencies)
    else:
        train_loss = _cross_entropy(train_y, frequencies, floor=0.0)
        # A class the training split never shows would cost ln(1/0) on the test split: it
        # gets the weight of one unseen example instead.
        test_loss = _cross_entropy(test_y, frequencies, floor=1.0 / (len(train_y) + 1))
    commonest = frequencies.argmax(axis=-1)  # () or (T,)
    return TrivialBaseline(
        predictor="class frequencies" + (" per position" if data.many_to_many else ""),
        loss=loss,
        train_loss=train_loss,
        test_loss=test_loss,
        chance_accuracy=float(np.mean(test_y == commonest)),
    )


def _class_frequencies(labels: np.ndarray, classes: int) -> np.ndarray:
    if labels.ndim == 1:
        return np.bincount(labels, minlength=classes) / len(labels)
    # (N, T) → (T, K): one distribution per output position
    positions = labels.shape[1]
    flat = (np.arange(positions)[None, :] * classes + labels).ravel()
    counts = np.bincount(flat, minlength=positions * classes).reshape(positions, classes)
    return counts / labels.shape[0]


def _probabilities_of(labels: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    if labels.ndim == 1:
        return frequencies[labels]
    return frequencies[np.arange(labels.shape[1])[None, :], labels]  # (N, T)


def _cross_entropy(labels: np.ndarray, frequencies: np.ndarray, floor: float) -> float:
    probabilities = np.maximum(_probabilities_of(labels, frequencies), floor)
    with np.errstate(divide="ignore"):
        return float(-np.mean(np.log(probabilities)))


def _one_hot_mse(labels: np.ndarray, frequencies: np.ndarray) -> float:
    # The trainer's square loss on one-hot targets, ½‖p − e_y‖² summed over the classes and
    # averaged over the examples (Cohen et al. 2021, App. B; workers/engine/losses.py):
    #   ½ (Σ_k p_k² − 2 p_y + 1) per example and position.
    squares = (frequencies**2).sum(axis=-1)  # () or (T,)
    per_example = squares - 2 * _probabilities_of(labels, frequencies) + 1.0
    return float(0.5 * np.mean(per_example))
