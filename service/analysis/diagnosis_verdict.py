"""The verdict's words: a run with no data, the one-sentence headline, and the remedy for a
model that has not learned although its gradient looks sound."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.analysis.diagnosis_records import (
    Diagnosis,
    DiagnosisInput,
    Finding,
    HorizonSummary,
    LearningSummary,
    NonFiniteSummary,
    Remedy,
    Verdict,
)
from service.analysis.gradient_stats import format_number
from service.config import DiagnosisThresholds


def has_data(data: DiagnosisInput) -> bool:
    return any(len(one.steps) for series in data.series.values() for one in series) or bool(data.timesteps)


def no_data(data: DiagnosisInput, thresholds: DiagnosisThresholds) -> Diagnosis:
    """A run that recorded nothing (queued, or failed before its first step) has no verdict."""
    status = data.status or "unknown"
    message = f"{status}: no step has been recorded, so there is nothing to diagnose"
    return Diagnosis(
        verdict="no_data",
        headline=message,
        findings=[Finding(kind="no_data", message=message, evidence={"status": status})],
        remedies=[],
        thresholds=thresholds.model_dump(),
        layers=[],
        depth_ratio=None,
        backprop_ratio=None,
        grad_norm=None,
        nonfinite=NonFiniteSummary(steps=0, first_step=None, metrics=[], layers=[], diverged_at_step=None),
        horizon=[],
        learning=None,
    )


def headline(
    verdict: Verdict,
    findings: list[Finding],
    not_learning: bool,
    learning: LearningSummary | None,
    horizons: list[HorizonSummary],
) -> str:
    """One sentence: the verdict, and the gradient evidence beside whether the model learned."""
    gradient = next((f for f in findings if f.kind in ("exploding", "vanishing_depth", "vanishing_time")), None)
    if not_learning:
        lead = next(f for f in findings if f.kind == "not_learning")
        if gradient is not None:
            return f"not learning ({lead.message.split(':')[0]}): {gradient.message}"
        reach = [f"{format_number(h.final)} of {h.sequence_timesteps}" for h in horizons if h.final is not None]
        reaches = f"; the gradient reaches {', '.join(reach)} timesteps back" if reach else ""
        return f"not learning: {lead.message}, with no vanishing or exploding gradient found{reaches}"
    if gradient is not None:
        return f"{verdict}: {gradient.message}"
    learned = (
        f": {learning.judged_on} loss {learning.test_ratio if learning.judged_on == 'test' else learning.train_ratio:.2g}× "
        "the trivial baseline"
        if learning is not None and learning.learned
        else ""
    )
    return f"healthy{learned}"


def train_longer(spec: Mapping[str, Any]) -> Remedy:
    steps = int((spec.get("training") or {}).get("steps") or 1000)
    return Remedy(
        problem="not_learning",
        action=(
            "the gradient shows no pathology, so the optimisation has not gone far enough: train longer, or "
            "raise the learning rate (a small rate on a long sequence can leave the loss at the baseline for "
            "thousands of steps)"
        ),
        reference="Hochreiter & Schmidhuber 1997 (the adding problem takes many updates to solve)",
        spec_changes={"training.steps": 4 * steps},
    )
