"""The sharpness λ_max of the training loss against gradient descent's stability limit.

On a quadratic with curvature λ, gradient descent with step η diverges once λ > 2/η (with
heavy-ball momentum β, once λ > (2 + 2β)/η). Cohen, Kaur, Li, Kolter & Talwalkar 2021
("Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability", Fig. 1)
find that full-batch gradient descent raises λ_max (progressive sharpening) until it reaches
that limit and then hovers at it while the loss keeps falling, non-monotonically. The
summary reports λ_max after training over the limit, and an `edge_of_stability` finding
when it sits within `edge_of_stability_tolerance` of it. Adaptive optimisers (Adam,
RMSprop) have no such limit on the raw Hessian, so no ratio is computed for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from service.analysis.diagnosis_records import DiagnosisInput, Finding, SharpnessSummary
from service.config import DiagnosisThresholds

COHEN_2021 = "Cohen, Kaur, Li, Kolter & Talwalkar 2021, Gradient descent on neural networks typically occurs at the edge of stability"


def stability_factor(training: Mapping[str, Any]) -> float | None:
    """c in the limit c/η: 2 for SGD, 2 + 2β for heavy-ball momentum β (Cohen et al. 2021, §2)."""
    optimizer = str(training.get("optimizer", "sgd"))
    if optimizer == "sgd":
        return 2.0
    if optimizer == "momentum" and not training.get("nesterov"):
        return 2.0 * (1.0 + float(training.get("momentum") or 0.0))
    return None


def _global(data: DiagnosisInput, metric: str):
    return next((one for one in data.series.get(metric, ()) if one.layer is None), None)


def sharpness_summary(data: DiagnosisInput, thresholds: DiagnosisThresholds) -> SharpnessSummary | None:
    sharpness = _global(data, "hessian_max_eig")
    if sharpness is None or len(sharpness.steps) == 0:
        return None
    training = dict(data.spec.get("training") or {})
    factor = stability_factor(training)
    lr = _global(data, "lr")
    steps, values = sharpness.steps, sharpness.values
    if lr is not None and len(lr.steps):
        # The limit at each measurement from the run's own learning rate (a schedule moves it).
        rows = np.clip(np.searchsorted(lr.steps, steps, side="right") - 1, 0, len(lr.steps) - 1)
        rates = lr.values[rows]
    else:
        rates = np.full(len(steps), float(training.get("lr") or np.nan))
    limits = factor / rates if factor is not None else np.full(len(steps), np.nan)  # (K,)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = values / limits
    tail = max(1, int(np.ceil(len(steps) * thresholds.late_fraction)))
    late = ratios[-tail:]
    late = late[np.isfinite(late)]
    finite = values[np.isfinite(values)]
    return SharpnessSummary(
        measurements=len(steps),
        stability_factor=factor,
        at_start=float(values[0]),
        maximum=float(finite.max()) if len(finite) else None,
        final=float(np.median(values[-tail:][np.isfinite(values[-tail:])])) if np.isfinite(values[-tail:]).any() else None,
        final_limit=float(limits[-1]) if np.isfinite(limits[-1]) else None,
        final_ratio=float(np.median(late)) if len(late) else None,
        first_step_at_limit=_first_at_limit(steps, ratios, thresholds.edge_of_stability_tolerance),
    )


def _first_at_limit(steps: np.ndarray, ratios: np.ndarray, tolerance: float) -> int | None:
    reached = np.flatnonzero(np.isfinite(ratios) & (ratios >= 1.0 - tolerance))
    return int(steps[reached[0]]) if len(reached) else None


def edge_of_stability_finding(summary: SharpnessSummary, thresholds: DiagnosisThresholds) -> Finding | None:
    ratio = summary.final_ratio
    if ratio is None or abs(ratio - 1.0) > thresholds.edge_of_stability_tolerance:
        return None
    limit = "2/η" if summary.stability_factor == 2.0 else f"{summary.stability_factor:g}/η"
    return Finding(
        kind="edge_of_stability",
        message=(
            f"the sharpness λ_max ends at {summary.final:.3g}, {ratio:.2f}× the stability limit {limit} = "
            f"{summary.final_limit:.3g} (first reached at step {summary.first_step_at_limit}): gradient descent "
            "trains at the edge of stability, where the loss falls non-monotonically and a larger step would "
            "not be stable on a quadratic of this curvature"
        ),
        evidence={
            "final_sharpness": summary.final,
            "limit": summary.final_limit,
            "ratio": ratio,
            "first_step_at_limit": summary.first_step_at_limit,
            "at_start": summary.at_start,
            "tolerance": thresholds.edge_of_stability_tolerance,
            "reference": COHEN_2021,
        },
    )
