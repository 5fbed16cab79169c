"""Did the model learn? Its final losses against its task's trivial baseline.

The worker stores, with each result, the losses of the best predictor that never looks at
the input (workers/engine/baselines.py: the constant predictor's MSE for `adding`, the
memoryless model's cross-entropy for `copy`, the class prior's entropy for classification,
and chance accuracy). A gradient can look healthy while the loss sits at that baseline: an
LSTM on the adding problem whose gradient reaches all 49 timesteps back but whose test MSE
is 0.159 against the constant predictor's 0.167 has learned nothing yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from service.analysis.diagnosis_records import DiagnosisInput, Finding, LearningSummary
from service.config import DiagnosisThresholds


def learning_summary(data: DiagnosisInput, thresholds: DiagnosisThresholds) -> LearningSummary | None:
    """None when the run has no baseline (stored before baselines were measured, or none yet)."""
    result: Mapping[str, Any] = data.result or {}
    baseline = result.get("baseline")
    if not baseline:
        return None
    train_loss = _late_loss(data, thresholds.late_fraction)
    test_loss = _number(result.get("test_loss"))
    train_ratio = _ratio(train_loss, _number(baseline.get("train_loss")))
    test_ratio = _ratio(test_loss, _number(baseline.get("test_loss")))
    judged_on, ratio = ("test", test_ratio) if test_ratio is not None else ("train", train_ratio)
    return LearningSummary(
        baseline=dict(baseline),
        train_loss=train_loss,
        test_loss=test_loss,
        train_ratio=train_ratio,
        test_ratio=test_ratio,
        test_accuracy=_number(result.get("test_accuracy")),
        chance_accuracy=_number(baseline.get("chance_accuracy")),
        judged_on=judged_on if ratio is not None else None,
        learned=None if ratio is None else ratio < thresholds.not_learning_loss_ratio,
    )


def not_learning_finding(learning: LearningSummary, thresholds: DiagnosisThresholds, steps_done: int | None) -> Finding:
    split = learning.judged_on or "train"
    loss = learning.test_loss if split == "test" else learning.train_loss
    ratio = learning.test_ratio if split == "test" else learning.train_ratio
    baseline = learning.baseline
    accuracy = (
        f"; test accuracy {learning.test_accuracy:.3g} against chance {learning.chance_accuracy:.3g}"
        if learning.test_accuracy is not None and learning.chance_accuracy is not None
        else ""
    )
    return Finding(
        kind="not_learning",
        message=(
            f"{split} {baseline.get('loss')} {loss:.3g} is {ratio:.2f}× the {baseline.get('predictor')} baseline's "
            f"{float(baseline[f'{split}_loss']):.3g}"
            f"{f' after {steps_done} steps' if steps_done is not None else ''}: the model has not learned "
            f"more than an input-blind predictor{accuracy}"
        ),
        evidence={
            "split": split,
            "loss": loss,
            "baseline_loss": baseline.get(f"{split}_loss"),
            "ratio": ratio,
            "predictor": baseline.get("predictor"),
            "test_accuracy": learning.test_accuracy,
            "chance_accuracy": learning.chance_accuracy,
            "steps_done": steps_done,
            "threshold": thresholds.not_learning_loss_ratio,
        },
    )


def _late_loss(data: DiagnosisInput, late_fraction: float) -> float | None:
    loss = next((one for one in data.series.get("loss", ()) if one.layer is None), None)
    if loss is None or len(loss.values) == 0:
        return None
    tail = loss.values[-max(1, int(np.ceil(len(loss.values) * late_fraction))) :]
    finite = tail[np.isfinite(tail)]
    # Each record is one mini-batch: the median over the last tenth is the training loss
    # the run ended at, not one batch's luck.
    return float(np.median(finite)) if len(finite) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else None


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline
