"""Saturated activations, read from the pre-activation histograms (`logging.histogram_every`).

A σ or tanh unit passes back f'(s) times the gradient it receives; where f'(s) is a small
fraction of its peak the unit is saturated and the layers below it starve (Glorot & Bengio
2010, Fig. 2: with the then-standard initialisation the sigmoid net's top hidden layer sits
at 0 for most of training). The summary counts, per layer and histogram step, the fraction
of pre-activations with f'(s) < `saturation_derivative` · max f', the same criterion as the
engine's `act_saturation` probe (workers/engine/activations.py), so both numbers agree.

Why the histograms allow it: `act_pre` is binned on s itself over [−8, 8) in bins 1/8 wide,
plus exact counts beyond either end. |s| ≥ e is an exact count for every bin edge e, so the
summary counts from the first edge at or beyond the bound (σ with 0.05: bound 4.36, edge
4.375; tanh: 2.18, edge 2.25): every value counted is saturated, and at most one bin's worth
on each side, the values just inside the edge, is left out. The outputs' bins cannot tell
this (σ > 0.987 is inside the top bin [0.875, 1)), nor can recurrent layers, whose fused
kernels give `act_out` only; so the finding is an MLP's. Rectifiers do not saturate for
s > 0 (f' = 1) and get no such finding.

Reads only the `act_pre` histogram chunks: S × (bins + 4) integers per layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.analysis.diagnosis_records import Finding, LayerSaturation, Remedy, SaturationSummary, SeriesPoints
from service.analysis.references import GLOROT_2010, HE_2015, IOFFE_2015
from service.config import DiagnosisThresholds
from service.store.histograms import HistogramData

SATURATING = ("sigmoid", "tanh", "softsign")


def derivative_bound(activation: str, fraction: float) -> float | None:
    """|s| beyond which f'(s) < fraction · max f' (None for an activation that does not saturate).

    tanh: f' = 1 − tanh² s, so tanh² s > 1 − fraction. σ(s) = (1 + tanh(s/2)) / 2, hence
    σ' = (1 − tanh²(s/2)) / 4 and twice tanh's bound. softsign: f' = (1 + |s|)⁻².
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"saturation_derivative must lie in (0, 1), got {fraction}")
    if activation == "tanh":
        return math.atanh(math.sqrt(1.0 - fraction))
    if activation == "sigmoid":
        return 2.0 * math.atanh(math.sqrt(1.0 - fraction))
    if activation == "softsign":
        return fraction**-0.5 - 1.0
    return None


def derivative_at(activation: str, s: float) -> float:
    """f'(s) / max f' at |s|: what a unit at the counting edge still passes back."""
    if activation == "softsign":
        return (1.0 + s) ** -2
    scale = 2.0 if activation == "sigmoid" else 1.0
    return 1.0 - math.tanh(s / scale) ** 2


def _counting_edge(edges: np.ndarray, bound: float) -> float | None:
    """The first bin edge at or beyond `bound`; None when the bins end before it."""
    at = int(np.searchsorted(edges, bound - 1e-12, side="left"))
    return float(edges[at]) if at < len(edges) else None


def _layer_saturation(item: HistogramData, activation: str, bound: float, thresholds: DiagnosisThresholds) -> LayerSaturation | None:
    edges = item.edges
    edge = _counting_edge(edges, bound)
    if edge is None or not np.isclose(edges[0], -edges[-1]):
        return None  # bins that do not reach the bound, or not symmetric about 0: not computable
    left, right = edges[:-1], edges[1:]
    outside = (left >= edge - 1e-12) | (right <= -edge + 1e-12)  # (bins,) whole bins with |s| ≥ edge
    special = item.special
    saturated = item.counts[:, outside].sum(axis=1) + special["below"] + special["above"]  # (S,)
    finite = item.counts.sum(axis=1) + special["zero"] + special["below"] + special["above"]  # (S,)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(finite > 0, saturated / np.maximum(finite, 1), np.nan)
    if not np.isfinite(fraction).any():
        return None
    worst = int(np.nanargmax(fraction))
    over = np.flatnonzero(fraction >= thresholds.saturation_fraction)
    return LayerSaturation(
        layer=item.layer,
        counting_edge=edge,
        derivative_at_edge=derivative_at(activation, edge),
        at_start=float(fraction[0]),
        at_end=float(fraction[-1]),
        median=float(np.nanmedian(fraction)),
        maximum=float(fraction[worst]),
        maximum_step=int(item.steps[worst]),
        steps_saturated=len(over),
        first_step_saturated=int(item.steps[over[0]]) if len(over) else None,
        last_step_saturated=int(item.steps[over[-1]]) if len(over) else None,
        histogram_steps=len(item.steps),
        nonfinite=int(special["nonfinite"].sum()),
        per_step=SeriesPoints(item.steps, fraction),
    )


def saturation_summary(
    histograms: Sequence[HistogramData], spec: Mapping[str, Any], thresholds: DiagnosisThresholds
) -> SaturationSummary | None:
    """Per layer, the saturated fraction of its pre-activations over training; None when the
    run has no `act_pre` histograms or its activation does not saturate."""
    model = dict(spec.get("model") or {})
    activation = str(model.get("activation", ""))
    bound = derivative_bound(activation, thresholds.saturation_derivative)
    found = [h for h in histograms if h.metric == "act_pre" and len(h.steps)]
    if bound is None or not found or str(model.get("type", "mlp")) != "mlp":
        return None
    layers = [one for one in (_layer_saturation(h, activation, bound, thresholds) for h in found) if one is not None]
    if not layers:
        return None
    return SaturationSummary(activation=activation, bound=bound, layers=layers)


def saturation_finding(summary: SaturationSummary, thresholds: DiagnosisThresholds) -> Finding | None:
    saturated = [one for one in summary.layers if one.steps_saturated]
    if not saturated:
        return None
    edge, at_edge = saturated[0].counting_edge, saturated[0].derivative_at_edge
    described = "; ".join(
        f"{one.layer} {one.maximum:.0%} at step {one.maximum_step} (≥ {thresholds.saturation_fraction:.0%} on "
        f"{one.steps_saturated} of {one.histogram_steps} histogram steps, {one.first_step_saturated}–{one.last_step_saturated})"
        for one in saturated
    )
    return Finding(
        kind="saturation",
        message=(
            f"{summary.activation} units are saturated (|s| ≥ {edge:g}, where f'(s) ≤ {at_edge:.2g} × its peak): "
            f"{described}; a saturated unit passes back almost none of its gradient, so the layers below it learn slowly"
        ),
        evidence={
            "metric": "act_pre",
            "activation": summary.activation,
            "bound": summary.bound,
            "counting_edge": edge,
            "derivative_at_edge": at_edge,
            "layers": {
                one.layer: {
                    "at_start": one.at_start,
                    "maximum": one.maximum,
                    "maximum_step": one.maximum_step,
                    "at_end": one.at_end,
                    "steps_saturated": one.steps_saturated,
                    "first_step": one.first_step_saturated,
                    "last_step": one.last_step_saturated,
                }
                for one in saturated
            },
            "threshold_derivative": thresholds.saturation_derivative,
            "threshold_fraction": thresholds.saturation_fraction,
            "reference": GLOROT_2010,
        },
    )


def saturation_remedies(spec: Mapping[str, Any]) -> list[Remedy]:
    model = dict(spec.get("model") or {})
    scheme = str((model.get("init") or {}).get("scheme", ""))
    remedies = [
        Remedy(
            problem="saturation",
            action=(
                "use a non-saturating activation (ReLU, or GELU where a smooth one is wanted) with Kaiming "
                "initialisation: for s > 0 its derivative is 1, so no unit saturates; normalising each "
                "layer's pre-activations (batch or layer normalisation) also keeps s near 0"
            ),
            reference=f"{HE_2015}; {IOFFE_2015}",
            spec_changes={"model.activation": "relu", "model.init.scheme": "kaiming_normal"},
        )
    ]
    if not scheme.startswith("xavier"):
        remedies.append(
            Remedy(
                problem="saturation",
                action=(
                    f"keep {model.get('activation')} but initialise with xavier_uniform instead of {scheme or 'the default'}: "
                    "it scales each layer's weights by its fan-in and fan-out so that s stays in the "
                    "activation's linear range at the start"
                ),
                reference=GLOROT_2010,
                spec_changes={"model.init.scheme": "xavier_uniform"},
            )
        )
    return remedies
