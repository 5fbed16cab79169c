"""The quantities a reproduction's check reads from one finished member of its sweep.

Every measure is a function of what the summary route already computes (the diagnosis)
and of the member's stored result and gradients through time, so a reproduction measures
exactly what a user reading `/summary`, `/timesteps` or the result would see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.analysis.diagnosis_records import Diagnosis
from service.store.records import ExperimentRecord, TimestepData


@dataclass(frozen=True)
class MemberFacts:
    record: ExperimentRecord
    diagnosis: Diagnosis | None  # None while the member has not finished (nothing is measured then)
    timesteps: Sequence[TimestepData] = ()


def _result(key: str) -> Callable[[MemberFacts], Any]:
    return lambda facts: (facts.record.result or {}).get(key)


def _first_to_last_at_start(facts: MemberFacts) -> float | None:
    """‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ at the first recorded step (initialisation: Pascanu et al. 2013)."""
    if not facts.timesteps or len(facts.timesteps[0].steps) == 0:
        return None
    row = facts.timesteps[0].hidden_grad_norm[0]  # (T',)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(row[0] / row[-1])


def _horizon(field: str) -> Callable[[MemberFacts], Any]:
    return lambda facts: getattr(facts.diagnosis.horizon[0], field) if facts.diagnosis.horizon else None


def _depth(field: str, which: str = "depth_ratio") -> Callable[[MemberFacts], Any]:
    def read(facts: MemberFacts) -> Any:
        ratio = getattr(facts.diagnosis, which)
        return None if ratio is None else getattr(ratio, field)

    return read


def _learning(field: str) -> Callable[[MemberFacts], Any]:
    return lambda facts: None if facts.diagnosis.learning is None else getattr(facts.diagnosis.learning, field)


def _baseline(field: str) -> Callable[[MemberFacts], Any]:
    return lambda facts: ((facts.record.result or {}).get("baseline") or {}).get(field)


def _post_clip_max(facts: MemberFacts) -> float | None:
    return None if facts.diagnosis.grad_norm is None else facts.diagnosis.grad_norm.post_clip_max


def _log10_abs(measure: Callable[[MemberFacts], Any]) -> Callable[[MemberFacts], Any]:
    def read(facts: MemberFacts) -> Any:
        value = measure(facts)
        if not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
            return None
        return abs(float(np.log10(value)))

    return read


def _sharpness_over_limit(field: str) -> Callable[[MemberFacts], Any]:
    """λ_max (at the start, its peak) over the stability limit c/η at the last measurement."""

    def read(facts: MemberFacts) -> Any:
        sharpness = facts.diagnosis.sharpness
        if sharpness is None or not sharpness.final_limit:
            return None
        value = getattr(sharpness, field)
        return None if value is None else value / sharpness.final_limit

    return read


def _sharpness_final_ratio(facts: MemberFacts) -> float | None:
    return None if facts.diagnosis.sharpness is None else facts.diagnosis.sharpness.final_ratio


def _has_finding(kind: str) -> Callable[[MemberFacts], Any]:
    return lambda facts: any(finding.kind == kind for finding in facts.diagnosis.findings)


# name → (what it is, how to read it)
MEASURES: dict[str, tuple[str, Callable[[MemberFacts], Any]]] = {
    "status": ("the member's final status", lambda facts: facts.record.status),
    "verdict": ("the summary's verdict", lambda facts: facts.diagnosis.verdict),
    "diverged_at_step": ("the first step whose loss was not finite (null: never)", _result("diverged_at_step")),
    "steps_done": ("optimisation steps done", _result("steps_done")),
    "test_loss": ("loss on the held-out split after training", _result("test_loss")),
    "test_accuracy": ("accuracy on the held-out split after training", _result("test_accuracy")),
    "baseline_test_loss": ("the input-blind predictor's held-out loss", _baseline("test_loss")),
    "test_over_baseline": ("held-out loss over the input-blind predictor's", _learning("test_ratio")),
    "depth_ratio_at_start": (
        "mean |∂L/∂W| of the first weight layer over the last, at the first recorded step",
        _depth("at_start"),
    ),
    "backprop_ratio_at_start": (
        "‖∂L/∂s‖ of the first layer over the last, at the first recorded step",
        _depth("at_start", "backprop_ratio"),
    ),
    "backprop_log_distortion": (
        "|log10| of ‖∂L/∂s‖ first over last at the first step: 0 when the norm is kept through depth",
        _log10_abs(_depth("at_start", "backprop_ratio")),
    ),
    "post_clip_max": ("the largest total gradient norm after clipping", _post_clip_max),
    "horizon": ("memory horizon after training (timesteps back, first recurrent layer)", _horizon("final")),
    "first_to_last": ("‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ after training (median of the last records)", _horizon("final_first_to_last")),
    "first_to_last_at_start": ("‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ at the first recorded step", _first_to_last_at_start),
    "sharpness_start_over_limit": ("λ_max at the first measurement over 2/η", _sharpness_over_limit("at_start")),
    "sharpness_peak_over_limit": ("the largest λ_max measured over 2/η", _sharpness_over_limit("maximum")),
    "sharpness_final_over_limit": ("λ_max after training over 2/η (median of the last measurements)", _sharpness_final_ratio),
    "edge_of_stability_found": ("the summary has an edge_of_stability finding", _has_finding("edge_of_stability")),
}
