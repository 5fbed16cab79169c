"""The gradient through time: a recurrent network whose memory horizon after training is
shorter than its sequence, and the remedy (an LSTM, its forget gates open)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.analysis.diagnosis_records import Finding, HorizonSummary, Remedy
from service.analysis.gradient_stats import format_number
from service.analysis.references import GERS_2000, HOCHREITER_1997, JOZEFOWICZ_2015
from service.config import DiagnosisThresholds


def vanishing_time(
    horizons: list[HorizonSummary],
    model_type: str,
    model: Mapping[str, Any],
    thresholds: DiagnosisThresholds,
    findings: list[Finding],
    remedies: list[Remedy],
) -> bool:
    short = [
        h for h in horizons if h.final_fraction is not None and h.final_fraction < thresholds.horizon_min_fraction
    ]
    if not short:
        return False
    worst = min(short, key=lambda h: h.final_fraction or 0.0)
    findings.append(
        Finding(
            kind="vanishing_time",
            message=(
                f"after training, ‖∂L/∂h_t‖ stays above {thresholds.horizon_relative_norm:g}·‖∂L/∂h_T‖ for only "
                f"{format_number(worst.final)} of {worst.sequence_timesteps} timesteps back (recurrent layer "
                f"{worst.layer_index}); ‖∂L/∂h_first‖/‖∂L/∂h_T‖ = {format_number(worst.final_first_to_last)}"
            ),
            evidence={
                "layer_index": worst.layer_index,
                "horizon": worst.final,
                "sequence_timesteps": worst.sequence_timesteps,
                "fraction": worst.final_fraction,
                "first_to_last": worst.final_first_to_last,
                "threshold": thresholds.horizon_min_fraction,
            },
        )
    )
    if model_type == "lstm":
        bias = model.get("forget_bias")
        target = 1.0 if bias is None or float(bias) < 1.0 else float(bias) + 1.0
        remedies.append(
            Remedy(
                problem="vanishing",
                action=(
                    f"set the forget-gate bias to {target:g} (now {bias}) so the forget gates start open and the "
                    "cell state carries the gradient back through time"
                ),
                reference=f"{GERS_2000}; {JOZEFOWICZ_2015}",
                spec_changes={"model.forget_bias": target},
            )
        )
    else:
        remedies.append(
            Remedy(
                problem="vanishing",
                action=(
                    "use an LSTM with its forget-gate bias at 1: its additive cell state keeps ‖∂L/∂h_t‖ from "
                    "shrinking geometrically through time"
                ),
                reference=f"{HOCHREITER_1997}; {GERS_2000}; {JOZEFOWICZ_2015}",
                spec_changes={"model.type": "lstm", "model.forget_bias": 1.0},
            )
        )
    return True
