"""The numbers behind the summary: per-layer medians, depth ratios and their decay per
layer, non-finite counts, the pre-clip gradient norm, and the memory horizon."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.analysis.diagnosis_records import (
    AdjacentDecay,
    DepthRatio,
    DiagnosisInput,
    GradNormSummary,
    HorizonSummary,
    LayerSummary,
    NonFiniteSummary,
    SeriesPoints,
)
from service.analysis.downsample import downsample
from service.analysis.horizon import final_horizon, memory_horizons
from service.config import DiagnosisThresholds
from service.store.records import SeriesData, TimestepData

# Per-layer metrics whose medians the summary lists, when the experiment has them.
LAYER_METRICS = (
    "grad_mean_abs",
    "grad_norm",
    "update_ratio",
    "backprop_norm",
    "act_saturation",
    "act_dead",
)

def is_weight(layer: str | None) -> bool:
    """Weight matrices (`layers.0.weight`, `rnn.weight_hh_l0`), not biases: the seed plots
    weights, and a bias gradient has a different scale (no input factor)."""
    return layer is not None and layer.rsplit(".", 1)[-1].startswith("weight")


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _median(values: np.ndarray) -> float:
    finite = _finite(values)  # a copy (boolean indexing), so the median may partition it in place
    return float(np.median(finite, overwrite_input=True)) if len(finite) else float("nan")


def _window(n: int, fraction: float) -> int:
    return max(1, int(np.ceil(n * fraction)))


def layer_summaries(series: Mapping[str, Sequence[SeriesData]]) -> list[LayerSummary]:
    medians: dict[str, dict[str, float]] = {}
    positions: dict[str, int] = {}
    for metric in LAYER_METRICS:
        for one in series.get(metric, ()):
            if one.layer is None:
                continue
            medians.setdefault(one.layer, {})[metric] = _median(one.values)
            positions.setdefault(one.layer, one.position)
    order = sorted(medians, key=lambda layer: (positions[layer], layer))
    return [LayerSummary(layer=layer, position=positions[layer], medians=medians[layer]) for layer in order]


def _common_steps(first: SeriesData, last: SeriesData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if _same_ascending_steps(first.steps, last.steps):
        # Layers written by one run share their steps: what intersect1d would return, without its sort.
        return first.steps, first.values, last.values
    steps, first_at, last_at = np.intersect1d(first.steps, last.steps, assume_unique=True, return_indices=True)
    return steps, first.values[first_at], last.values[last_at]


def _same_ascending_steps(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and bool(np.array_equal(a, b)) and bool(np.all(a[1:] > a[:-1]))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return numerator / denominator


def depth_ratio_summary(
    metric: str, series: list[SeriesData], thresholds: DiagnosisThresholds, max_points: int | None
) -> DepthRatio | None:
    layered = sorted((s for s in series if s.layer is not None and len(s.steps)), key=lambda s: s.position)
    if len(layered) < 2:
        return None
    first, last = layered[0], layered[-1]
    steps, first_values, last_values = _common_steps(first, last)
    if len(steps) == 0:
        return None
    ratio = _ratio(first_values, last_values)  # (S,)
    hops = len(layered) - 1
    adjacent = []
    for lower, upper in zip(layered[:-1], layered[1:], strict=True):
        _, lower_values, upper_values = _common_steps(lower, upper)
        pair = _ratio(lower_values, upper_values)
        adjacent.append(
            AdjacentDecay(
                lower=str(lower.layer),
                upper=str(upper.layer),
                ratio_at_start=float(pair[0]) if len(pair) else float("nan"),
                ratio_median=_median(pair),
            )
        )
    finite = _finite(ratio)
    at_start, median = float(ratio[0]), _median(ratio)
    ds_steps, ds_values = downsample(steps, ratio, max_points, "minmax")
    return DepthRatio(
        metric=metric,
        first_layer=str(first.layer),
        last_layer=str(last.layer),
        n_layers=len(layered),
        start_step=int(steps[0]),
        at_start=at_start,
        median=median,
        minimum=float(finite.min()) if len(finite) else float("nan"),
        maximum=float(finite.max()) if len(finite) else float("nan"),
        at_end=float(ratio[-1]),
        decay_per_layer_at_start=decay_per_hop(at_start, hops),
        decay_per_layer_median=decay_per_hop(median, hops),
        adjacent=adjacent,
        per_step=SeriesPoints(ds_steps, ds_values),
    )


def decay_per_hop(ratio: float, hops: int) -> float:
    """Geometric mean of `hops` factors whose product is `ratio`."""
    if not np.isfinite(ratio) or ratio <= 0:
        return float("nan")
    return float(ratio ** (1.0 / hops))


def _global(data: DiagnosisInput, metric: str) -> SeriesData | None:
    for one in data.series.get(metric, ()):
        if one.layer is None:
            return one
    return None


def nonfinite_summary(data: DiagnosisInput) -> NonFiniteSummary:
    bad_steps: list[np.ndarray] = []
    metrics: list[str] = []
    for metric in ("loss", "grad_norm_total"):
        one = _global(data, metric)
        if one is not None:
            bad = one.steps[~np.isfinite(one.values)]
            if len(bad):
                metrics.append(metric)
                bad_steps.append(bad)
    layers = []
    for one in data.series.get("grad_nonfinite", ()):
        bad = one.steps[one.values > 0]  # NaN compares False; a NaN count is not a count
        if len(bad):
            layers.append(str(one.layer))
            bad_steps.append(bad)
    if layers:
        metrics.append("grad_nonfinite")
    steps = np.unique(np.concatenate(bad_steps)) if bad_steps else np.zeros(0, np.int64)
    diverged_at = (data.result or {}).get("diverged_at_step")
    return NonFiniteSummary(
        steps=len(steps),
        first_step=int(steps[0]) if len(steps) else None,
        metrics=metrics,
        layers=layers,
        diverged_at_step=int(diverged_at) if diverged_at is not None else None,
    )


def grad_norm_summary(
    data: DiagnosisInput,
    clipping: Mapping[str, Any],
    nonfinite: NonFiniteSummary,
    thresholds: DiagnosisThresholds,
) -> GradNormSummary | None:
    pre = _global(data, "grad_norm_total")
    if pre is None or len(pre.steps) == 0:
        return None
    post = _global(data, "grad_norm_total_clipped")
    clipped = _global(data, "clipped")
    finite = np.isfinite(pre.values)
    # "Early" ends at the first non-finite step: after it the statistics describe the
    # explosion, not the training it interrupted.
    sane = pre.values[: int(np.argmin(finite))] if not finite.all() else pre.values
    early = sane[: _window(len(sane), thresholds.early_fraction)] if len(sane) else sane
    values = pre.values[finite]
    clipped_steps = int(np.sum(clipped.values > 0.5)) if clipped is not None else 0
    early_median = float(np.median(early)) if len(early) else None
    pre_max = float(values.max()) if len(values) else None
    post_values = _finite(post.values) if post is not None else np.zeros(0)
    threshold = clipping.get("threshold")
    return GradNormSummary(
        clipping_mode=str(clipping.get("mode", "none")),
        clipping_threshold=float(threshold) if threshold is not None else None,
        recorded_steps=len(pre.steps),
        clipped_steps=clipped_steps,
        clipped_fraction=clipped_steps / len(pre.steps),
        pre_clip_mean=float(values.mean()) if len(values) else None,
        pre_clip_median=float(np.median(values)) if len(values) else None,
        pre_clip_p95=float(np.percentile(values, 95)) if len(values) else None,
        pre_clip_max=pre_max,
        pre_clip_max_step=int(pre.steps[finite][np.argmax(values)]) if len(values) else None,
        early_mean=float(early.mean()) if len(early) else None,
        early_median=early_median,
        growth=pre_max / early_median if pre_max is not None and early_median else None,
        post_clip_max=float(post_values.max()) if len(post_values) else None,
    )


def horizon_summary(
    timesteps: Sequence[TimestepData], thresholds: DiagnosisThresholds, max_points: int | None
) -> list[HorizonSummary]:
    summaries = []
    for layer in memory_horizons(timesteps, thresholds.horizon_relative_norm):
        if len(layer.steps) == 0:
            continue
        final = final_horizon(layer, thresholds.late_fraction)
        tail = _window(len(layer.steps), thresholds.late_fraction)
        ds_steps, ds_values = downsample(layer.steps, layer.horizon, max_points, "minmax")
        summaries.append(
            HorizonSummary(
                layer_index=layer.layer_index,
                sequence_timesteps=layer.max_horizon,
                at_start=_or_none(layer.horizon[0]),
                final=_or_none(final),
                final_fraction=_or_none(final / layer.max_horizon) if layer.max_horizon else None,
                final_first_to_last=_or_none(_median(layer.first_to_last[-tail:])),
                per_step=SeriesPoints(ds_steps, ds_values),
            )
        )
    return summaries


def _or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
