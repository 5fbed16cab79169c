"""The summary of an experiment: is its gradient vanishing, exploding, or healthy, and why.

Pure functions over the store's records: `diagnose(DiagnosisInput, thresholds)` reads the
probes the engine records and returns the numbers, the verdict, the evidence behind it
(layers, steps, values) and the literature's remedies. No database, no HTTP.

How the verdict is reached (thresholds in `service.config.DiagnosisThresholds`):

- **exploding** when the run goes non-finite (loss, total gradient norm, or a layer's
  NaN/Inf count), or, with no clipping active, when the pre-clip norm grows by
  `exploding_norm_growth` over its early level or the back-propagated signal grows with
  depth by `exploding_depth_ratio`. With clipping on and everything finite, large pre-clip
  norms are *controlled*, not exploding (Pascanu et al. 2013: that is what clipping is for).
- **vanishing** when, in an MLP, the first weight layer's mean |∂L/∂W| over the last
  one's at initialisation is below `vanishing_depth_ratio` (or its median over the run below
  `vanishing_depth_ratio_sustained`) while the back-propagated signal ‖∂L/∂s‖ shrinks
  toward the input; or, in a recurrent network, when the memory horizon after training
  covers less than `horizon_min_fraction` of the sequence.
- **healthy** otherwise.

The depth test looks at the first recorded step because that is where Glorot & Bengio
(2010) measure it and where activations differ: with the seed's sigmoid net the ratio is
0.02 at step 0 but recovers above 0.1 within five full-batch SGD steps, while tanh and ReLU
nets fall from 0.4-0.5 to about 0.1 later in training as their output layers fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.analysis.downsample import downsample
from service.analysis.horizon import final_horizon, memory_horizons
from service.config import DiagnosisThresholds
from service.store.records import SeriesData, TimestepData

Verdict = Literal["vanishing", "exploding", "healthy"]

# Per-layer metrics whose medians the summary lists, when the experiment has them.
LAYER_METRICS = (
    "grad_mean_abs",
    "grad_norm",
    "update_ratio",
    "backprop_norm",
    "act_saturation",
    "act_dead",
)
# Global metrics the diagnosis reads.
GLOBAL_METRICS = ("loss", "grad_norm_total", "grad_norm_total_clipped", "clipped")
# Every metric `diagnose` uses; the route reads exactly these.
DIAGNOSIS_METRICS = (*LAYER_METRICS, *GLOBAL_METRICS, "grad_nonfinite")

# Pascanu, Mikolov & Bengio (2013), Section 3.2: "a good heuristic for setting this
# threshold is to look at statistics on the average norm over a sufficiently large number
# of updates. In our experiments we have noticed that for a given task and model size,
# training is not very sensitive to this hyperparameter and the algorithm behaves well
# even for rather small thresholds" — they clip between half and ten times that average.
CLIP_RANGE = (0.5, 10.0)

PASCANU_2013 = "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural networks (Alg. 1)"
GLOROT_2010 = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks"
HE_2015 = "He, Zhang, Ren & Sun 2015, Delving deep into rectifiers (Kaiming initialisation)"
HOCHREITER_1997 = "Hochreiter & Schmidhuber 1997, Long short-term memory"
GERS_2000 = "Gers, Schmidhuber & Cummins 2000, Learning to forget: continual prediction with LSTM"
JOZEFOWICZ_2015 = "Jozefowicz, Zaremba & Sutskever 2015, An empirical exploration of recurrent network architectures"


@dataclass(frozen=True)
class DiagnosisInput:
    """What `diagnose` reads: the experiment's spec and status, its series, its timesteps."""

    spec: Mapping[str, Any]  # the ExperimentSpec as JSON (model, clipping, …)
    series: Mapping[str, Sequence[SeriesData]]  # metric → its series, input → output
    timesteps: Sequence[TimestepData] = ()
    status: str | None = None
    result: Mapping[str, Any] | None = None
    name: str | None = None


@dataclass(frozen=True)
class SeriesPoints:
    steps: np.ndarray  # int64
    values: np.ndarray  # float64, NaN/Inf as measured


@dataclass(frozen=True)
class LayerSummary:
    layer: str
    position: int
    medians: dict[str, float]  # metric → median of its finite values over the run


@dataclass(frozen=True)
class AdjacentDecay:
    lower: str  # the layer nearer the input
    upper: str
    ratio_at_start: float  # lower / upper at the first recorded step
    ratio_median: float  # median over the run of lower / upper


@dataclass(frozen=True)
class DepthRatio:
    """A metric of the first layer over the last one, per step and summarised."""

    metric: str
    first_layer: str
    last_layer: str
    n_layers: int
    start_step: int
    at_start: float
    median: float
    minimum: float
    maximum: float
    at_end: float
    # Geometric mean of the ratio between adjacent layers: (first / last) ** (1 / (L - 1));
    # below 1, the metric shrinks by this factor at each layer toward the input.
    decay_per_layer_at_start: float
    decay_per_layer_median: float
    adjacent: list[AdjacentDecay]
    per_step: SeriesPoints  # downsampled (minmax) to the requested max_points


@dataclass(frozen=True)
class GradNormSummary:
    """The total gradient norm before clipping (Pascanu's statistic) and what clipping did."""

    clipping_mode: str
    clipping_threshold: float | None
    recorded_steps: int
    clipped_steps: int
    clipped_fraction: float
    pre_clip_mean: float | None
    pre_clip_median: float | None
    pre_clip_p95: float | None
    pre_clip_max: float | None  # largest finite value
    pre_clip_max_step: int | None
    early_mean: float | None  # mean over the early steps (before any non-finite step)
    early_median: float | None
    growth: float | None  # pre_clip_max / early_median
    post_clip_max: float | None


@dataclass(frozen=True)
class NonFiniteSummary:
    steps: int  # recorded steps with a non-finite loss, total norm, or layer gradient
    first_step: int | None
    metrics: list[str]  # which metrics went non-finite
    layers: list[str]  # which layers reported NaN/Inf gradient entries
    diverged_at_step: int | None


@dataclass(frozen=True)
class HorizonSummary:
    layer_index: int
    sequence_timesteps: int  # the longest possible horizon (last recorded timestep − first)
    at_start: float | None  # horizon at the first recorded step
    final: float | None  # median over the last recorded steps
    final_fraction: float | None  # final / sequence_timesteps
    final_first_to_last: float | None  # ‖∂L/∂h_first‖ / ‖∂L/∂h_T‖ after training
    per_step: SeriesPoints


@dataclass(frozen=True)
class Finding:
    kind: str  # vanishing_depth | vanishing_time | exploding | clipping_controls | nonfinite | …
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Remedy:
    problem: Literal["vanishing", "exploding"]
    action: str
    reference: str
    # Spec changes that apply the remedy, by dotted path (e.g. {"clipping.mode": "norm"}).
    spec_changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    verdict: Verdict
    findings: list[Finding]
    remedies: list[Remedy]
    thresholds: dict[str, float]
    layers: list[LayerSummary]
    depth_ratio: DepthRatio | None  # grad_mean_abs of weights, first / last
    backprop_ratio: DepthRatio | None  # backprop_norm, first / last
    grad_norm: GradNormSummary | None
    nonfinite: NonFiniteSummary
    horizon: list[HorizonSummary]


def diagnose(data: DiagnosisInput, thresholds: DiagnosisThresholds, max_points: int | None = 1000) -> Diagnosis:
    """The summary, verdict, evidence and remedies of one experiment."""
    model = dict(data.spec.get("model") or {})
    clipping = dict(data.spec.get("clipping") or {})
    model_type = str(model.get("type", "mlp"))
    activation = str(model.get("activation", ""))

    weights = [s for s in data.series.get("grad_mean_abs", ()) if _is_weight(s.layer)]
    depth_ratio = _depth_ratio("grad_mean_abs", weights, thresholds, max_points)
    backprop_ratio = _depth_ratio("backprop_norm", list(data.series.get("backprop_norm", ())), thresholds, max_points)
    nonfinite = _nonfinite(data)
    grad_norm = _grad_norm(data, clipping, nonfinite, thresholds)
    horizons = _horizons(data.timesteps, thresholds, max_points)
    clipping_active = str(clipping.get("mode", "none")) != "none" or (
        grad_norm is not None and grad_norm.clipped_steps > 0
    )

    findings: list[Finding] = []
    remedies: list[Remedy] = []
    exploding = _exploding(
        nonfinite, grad_norm, backprop_ratio, clipping_active, thresholds, data.spec, findings, remedies
    )
    vanishing = False
    if model_type == "mlp":
        vanishing |= _vanishing_depth(depth_ratio, backprop_ratio, activation, thresholds, findings, remedies)
    vanishing |= _vanishing_time(horizons, model_type, model, thresholds, findings, remedies)

    verdict: Verdict = "exploding" if exploding else "vanishing" if vanishing else "healthy"
    return Diagnosis(
        verdict=verdict,
        findings=findings,
        remedies=remedies,
        thresholds=thresholds.model_dump(),
        layers=_layer_summaries(data.series),
        depth_ratio=depth_ratio,
        backprop_ratio=backprop_ratio,
        grad_norm=grad_norm,
        nonfinite=nonfinite,
        horizon=horizons,
    )


# --- the numbers ---------------------------------------------------------------------


def _is_weight(layer: str | None) -> bool:
    """Weight matrices (`layers.0.weight`, `rnn.weight_hh_l0`), not biases: the seed plots
    weights, and a bias gradient has a different scale (no input factor)."""
    return layer is not None and layer.rsplit(".", 1)[-1].startswith("weight")


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _median(values: np.ndarray) -> float:
    finite = _finite(values)
    return float(np.median(finite)) if len(finite) else float("nan")


def _window(n: int, fraction: float) -> int:
    return max(1, int(np.ceil(n * fraction)))


def _layer_summaries(series: Mapping[str, Sequence[SeriesData]]) -> list[LayerSummary]:
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
    steps, first_at, last_at = np.intersect1d(first.steps, last.steps, assume_unique=True, return_indices=True)
    return steps, first.values[first_at], last.values[last_at]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return numerator / denominator


def _depth_ratio(
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
        decay_per_layer_at_start=_root(at_start, hops),
        decay_per_layer_median=_root(median, hops),
        adjacent=adjacent,
        per_step=SeriesPoints(ds_steps, ds_values),
    )


def _root(ratio: float, hops: int) -> float:
    """Geometric mean of `hops` factors whose product is `ratio`."""
    if not np.isfinite(ratio) or ratio <= 0:
        return float("nan")
    return float(ratio ** (1.0 / hops))


def _global(data: DiagnosisInput, metric: str) -> SeriesData | None:
    for one in data.series.get(metric, ()):
        if one.layer is None:
            return one
    return None


def _nonfinite(data: DiagnosisInput) -> NonFiniteSummary:
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


def _grad_norm(
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


def _horizons(
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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


# --- the verdict -----------------------------------------------------------------------


def _exploding(
    nonfinite: NonFiniteSummary,
    grad_norm: GradNormSummary | None,
    backprop_ratio: DepthRatio | None,
    clipping_active: bool,
    thresholds: DiagnosisThresholds,
    spec: Mapping[str, Any],
    findings: list[Finding],
    remedies: list[Remedy],
) -> bool:
    reasons = []
    if nonfinite.steps or nonfinite.diverged_at_step is not None:
        first = nonfinite.first_step if nonfinite.first_step is not None else nonfinite.diverged_at_step
        reasons.append(
            Finding(
                kind="exploding",
                message=(
                    f"the run went non-finite at step {first} ({', '.join(nonfinite.metrics) or 'diverged'}"
                    f"{'; layers ' + ', '.join(nonfinite.layers) if nonfinite.layers else ''})"
                ),
                evidence={
                    "first_nonfinite_step": first,
                    "nonfinite_steps": nonfinite.steps,
                    "metrics": nonfinite.metrics,
                    "layers": nonfinite.layers,
                    "pre_clip_max": grad_norm.pre_clip_max if grad_norm else None,
                    "pre_clip_max_step": grad_norm.pre_clip_max_step if grad_norm else None,
                },
            )
        )
    if not clipping_active and grad_norm is not None and grad_norm.growth is not None:
        if grad_norm.growth >= thresholds.exploding_norm_growth:
            reasons.append(
                Finding(
                    kind="exploding",
                    message=(
                        f"the gradient norm grew ×{grad_norm.growth:.3g}, from {_fmt(grad_norm.early_median)} "
                        f"early on to {_fmt(grad_norm.pre_clip_max)} at step {grad_norm.pre_clip_max_step}, "
                        "with no clipping"
                    ),
                    evidence={
                        "early_median": grad_norm.early_median,
                        "pre_clip_max": grad_norm.pre_clip_max,
                        "pre_clip_max_step": grad_norm.pre_clip_max_step,
                        "growth": grad_norm.growth,
                        "threshold": thresholds.exploding_norm_growth,
                    },
                )
            )
    if not clipping_active and backprop_ratio is not None and backprop_ratio.at_start >= thresholds.exploding_depth_ratio:
        reasons.append(
            Finding(
                kind="exploding",
                message=(
                    f"the back-propagated signal ‖∂L/∂s‖ is ×{backprop_ratio.at_start:.3g} larger at "
                    f"{backprop_ratio.first_layer} than at {backprop_ratio.last_layer} (step "
                    f"{backprop_ratio.start_step}): it grows ×{backprop_ratio.decay_per_layer_at_start:.3g} "
                    "per layer toward the input"
                ),
                evidence={
                    "metric": "backprop_norm",
                    "first_layer": backprop_ratio.first_layer,
                    "last_layer": backprop_ratio.last_layer,
                    "step": backprop_ratio.start_step,
                    "ratio": backprop_ratio.at_start,
                    "threshold": thresholds.exploding_depth_ratio,
                },
            )
        )
    if not reasons:
        if clipping_active and grad_norm is not None and grad_norm.clipped_steps:
            findings.append(
                Finding(
                    kind="clipping_controls",
                    message=(
                        f"clipping ({grad_norm.clipping_mode}, threshold {_fmt(grad_norm.clipping_threshold)}) "
                        f"acted on {grad_norm.clipped_steps} of {grad_norm.recorded_steps} recorded steps; "
                        f"pre-clip norms reached {_fmt(grad_norm.pre_clip_max)} (median "
                        f"{_fmt(grad_norm.pre_clip_median)}) and every value stayed finite, so the large "
                        "gradients are controlled, not exploding"
                    ),
                    evidence={
                        "clipped_steps": grad_norm.clipped_steps,
                        "clipped_fraction": grad_norm.clipped_fraction,
                        "pre_clip_median": grad_norm.pre_clip_median,
                        "pre_clip_max": grad_norm.pre_clip_max,
                        "post_clip_max": grad_norm.post_clip_max,
                        "growth": grad_norm.growth,
                    },
                )
            )
        return False
    findings.extend(reasons)
    if grad_norm is not None and grad_norm.early_mean is not None:
        low, high = CLIP_RANGE[0] * grad_norm.early_mean, CLIP_RANGE[1] * grad_norm.early_mean
        remedies.append(
            Remedy(
                problem="exploding",
                action=(
                    f"clip the global gradient norm at a threshold between {low:.3g} and {high:.3g}: half to "
                    f"ten times the average pre-clip norm {grad_norm.early_mean:.3g} measured before the "
                    "gradient grew"
                    + (" (clipping is on: lower its threshold into this range)" if clipping_active else "")
                ),
                reference=PASCANU_2013,
                spec_changes={"clipping.mode": "norm", "clipping.threshold": float(f"{2 * grad_norm.early_mean:.3g}")},
            )
        )
    else:
        remedies.append(
            Remedy(
                problem="exploding",
                action="clip the global gradient norm at half to ten times its average over healthy steps",
                reference=PASCANU_2013,
                spec_changes={"clipping.mode": "norm"},
            )
        )
    init = dict((spec.get("model") or {}).get("init") or {})
    if init.get("scheme") in ("normal", "uniform") and float(init.get("std") or 0) >= 0.5:
        activation = str((spec.get("model") or {}).get("activation", ""))
        scheme = "kaiming_normal" if activation in ("relu", "leaky_relu", "elu", "gelu") else "xavier_normal"
        remedies.append(
            Remedy(
                problem="exploding",
                action=(
                    f"initialise with {scheme} instead of {init.get('scheme')}(std={init.get('std')}): it scales "
                    "each layer's weights by its fan-in so the signal keeps its variance through depth"
                ),
                reference=HE_2015 if scheme.startswith("kaiming") else GLOROT_2010,
                spec_changes={"model.init.scheme": scheme},
            )
        )
    return True


def _vanishing_depth(
    depth_ratio: DepthRatio | None,
    backprop_ratio: DepthRatio | None,
    activation: str,
    thresholds: DiagnosisThresholds,
    findings: list[Finding],
    remedies: list[Remedy],
) -> bool:
    if depth_ratio is None:
        return False
    at_start = depth_ratio.at_start < thresholds.vanishing_depth_ratio
    sustained = depth_ratio.median < thresholds.vanishing_depth_ratio_sustained
    if not (at_start or sustained):
        return False
    # Confirm with the back-propagated signal: if ‖∂L/∂s‖ does not shrink toward the
    # input, a small first-layer |∂L/∂W| only reflects small inputs (∂L/∂W = ∂L/∂s · xᵀ).
    if backprop_ratio is not None and np.isfinite(backprop_ratio.at_start):
        confirm = backprop_ratio.at_start if at_start else backprop_ratio.median
        if not confirm < thresholds.vanishing_backprop_ratio:
            findings.append(
                Finding(
                    kind="small_first_layer_gradient",
                    message=(
                        f"mean |∂L/∂W| of {depth_ratio.first_layer} is {depth_ratio.at_start:.3g}× that of "
                        f"{depth_ratio.last_layer}, but the back-propagated signal does not shrink toward "
                        f"the input (‖∂L/∂s‖ ratio {confirm:.3g}): the inputs are small, the gradient is not vanishing"
                    ),
                    evidence={"grad_mean_abs_ratio": depth_ratio.at_start, "backprop_norm_ratio": confirm},
                )
            )
            return False
    value, where = (
        (depth_ratio.at_start, f"at step {depth_ratio.start_step}")
        if at_start
        else (depth_ratio.median, "as the median over the run")
    )
    findings.append(
        Finding(
            kind="vanishing_depth",
            message=(
                f"mean |∂L/∂W| of the first layer ({depth_ratio.first_layer}) is {value:.3g}× that of the "
                f"last ({depth_ratio.last_layer}) {where}: it shrinks ×{_root(value, depth_ratio.n_layers - 1):.3g} "
                f"per layer toward the input over {depth_ratio.n_layers} layers"
            ),
            evidence={
                "metric": depth_ratio.metric,
                "first_layer": depth_ratio.first_layer,
                "last_layer": depth_ratio.last_layer,
                "step": depth_ratio.start_step if at_start else None,
                "ratio": value,
                "decay_per_layer": _root(value, depth_ratio.n_layers - 1),
                "adjacent": {f"{a.lower}/{a.upper}": a.ratio_at_start for a in depth_ratio.adjacent},
                "backprop_norm_ratio": backprop_ratio.at_start if backprop_ratio else None,
                "threshold": thresholds.vanishing_depth_ratio if at_start else thresholds.vanishing_depth_ratio_sustained,
            },
        )
    )
    if activation == "sigmoid":
        remedies.append(
            Remedy(
                problem="vanishing",
                action=(
                    "replace sigmoid with ReLU or tanh: sigmoid's derivative is at most 0.25 and its "
                    "non-zero mean saturates the top hidden layer, so each layer scales the gradient down"
                ),
                reference=GLOROT_2010,
                spec_changes={"model.activation": "relu"},
            )
        )
    else:
        scheme = "kaiming_normal" if activation in ("relu", "leaky_relu", "elu", "gelu") else "xavier_uniform"
        remedies.append(
            Remedy(
                problem="vanishing",
                action=f"initialise with {scheme} so that each layer keeps the gradient's variance",
                reference=HE_2015 if scheme.startswith("kaiming") else GLOROT_2010,
                spec_changes={"model.init.scheme": scheme},
            )
        )
    return True


def _vanishing_time(
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
                f"{_fmt(worst.final)} of {worst.sequence_timesteps} timesteps back (recurrent layer "
                f"{worst.layer_index}); ‖∂L/∂h_first‖/‖∂L/∂h_T‖ = {_fmt(worst.final_first_to_last)}"
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
