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

from collections.abc import Mapping
from typing import Any

import numpy as np

from service.analysis.diagnosis_records import (
    DepthRatio,
    Diagnosis,
    DiagnosisInput,
    Finding,
    GradNormSummary,
    NonFiniteSummary,
    Remedy,
    Verdict,
)
from service.analysis.gradient_stats import (
    LAYER_METRICS,
    decay_per_hop,
    depth_ratio_summary,
    format_number,
    grad_norm_summary,
    horizon_summary,
    is_weight,
    layer_summaries,
    nonfinite_summary,
)
from service.analysis.diagnosis_time import vanishing_time
from service.analysis.diagnosis_verdict import has_data, headline, no_data, train_longer
from service.analysis.learning import learning_summary, not_learning_finding
from service.analysis.saturation import saturation_finding, saturation_remedies, saturation_summary
from service.analysis.sharpness import edge_of_stability_finding, sharpness_summary
from service.analysis.references import (
    GLOROT_2010,
    HE_2015,
    PASCANU_2013,
)
from service.config import DiagnosisThresholds

# Global metrics the diagnosis reads.
GLOBAL_METRICS = ("loss", "grad_norm_total", "grad_norm_total_clipped", "clipped")
# Every metric `diagnose` uses; the route reads exactly these.
DIAGNOSIS_METRICS = (*LAYER_METRICS, *GLOBAL_METRICS, "grad_nonfinite", "hessian_max_eig", "lr")

# Pascanu, Mikolov & Bengio (2013), Section 3.2, set the clipping threshold from the
# average gradient norm seen over many updates and report that anything from half to ten
# times that average works.
CLIP_RANGE = (0.5, 10.0)




def diagnose(data: DiagnosisInput, thresholds: DiagnosisThresholds, max_points: int | None = 1000) -> Diagnosis:
    """The summary, verdict, evidence and remedies of one experiment."""
    if not has_data(data):
        return no_data(data, thresholds)
    model = dict(data.spec.get("model") or {})
    clipping = dict(data.spec.get("clipping") or {})
    model_type = str(model.get("type", "mlp"))
    activation = str(model.get("activation", ""))

    weights = [s for s in data.series.get("grad_mean_abs", ()) if is_weight(s.layer)]
    depth_ratio = depth_ratio_summary("grad_mean_abs", weights, thresholds, max_points)
    backprop_ratio = depth_ratio_summary("backprop_norm", list(data.series.get("backprop_norm", ())), thresholds, max_points)
    nonfinite = nonfinite_summary(data)
    grad_norm = grad_norm_summary(data, clipping, nonfinite, thresholds)
    horizons = horizon_summary(data.timesteps, thresholds, max_points)
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
    vanishing |= vanishing_time(horizons, model_type, model, thresholds, findings, remedies)

    learning = learning_summary(data, thresholds)
    not_learning = learning is not None and learning.learned is False
    if not_learning and learning is not None:
        findings.insert(0, not_learning_finding(learning, thresholds, (data.result or {}).get("steps_done")))
        if not (exploding or vanishing):
            remedies.append(train_longer(data.spec))
    sharpness = sharpness_summary(data, thresholds)
    at_edge = edge_of_stability_finding(sharpness, thresholds) if sharpness is not None else None
    if at_edge is not None:
        findings.append(at_edge)
    saturation = saturation_summary(data.activation_histograms, data.spec, thresholds)
    saturated = saturation_finding(saturation, thresholds) if saturation is not None else None
    if saturated is not None:
        findings.append(saturated)
        remedies.extend(saturation_remedies(data.spec))
    verdict: Verdict = (
        "exploding" if exploding else "vanishing" if vanishing else "not_learning" if not_learning else "healthy"
    )
    return Diagnosis(
        verdict=verdict,
        headline=headline(verdict, findings, not_learning, learning, horizons),
        findings=findings,
        remedies=remedies,
        thresholds=thresholds.model_dump(),
        layers=layer_summaries(data.series),
        depth_ratio=depth_ratio,
        backprop_ratio=backprop_ratio,
        grad_norm=grad_norm,
        nonfinite=nonfinite,
        horizon=horizons,
        learning=learning,
        sharpness=sharpness,
        saturation=saturation,
    )


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
                        f"the gradient norm grew ×{grad_norm.growth:.3g}, from {format_number(grad_norm.early_median)} "
                        f"early on to {format_number(grad_norm.pre_clip_max)} at step {grad_norm.pre_clip_max_step}, "
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
                        f"clipping ({grad_norm.clipping_mode}, threshold {format_number(grad_norm.clipping_threshold)}) "
                        f"acted on {grad_norm.clipped_steps} of {grad_norm.recorded_steps} recorded steps; "
                        f"pre-clip norms reached {format_number(grad_norm.pre_clip_max)} (median "
                        f"{format_number(grad_norm.pre_clip_median)}) and every value stayed finite, so the large "
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
                f"last ({depth_ratio.last_layer}) {where}: it shrinks ×{decay_per_hop(value, depth_ratio.n_layers - 1):.3g} "
                f"per layer toward the input over {depth_ratio.n_layers} layers"
            ),
            evidence={
                "metric": depth_ratio.metric,
                "first_layer": depth_ratio.first_layer,
                "last_layer": depth_ratio.last_layer,
                "step": depth_ratio.start_step if at_start else None,
                "ratio": value,
                "decay_per_layer": decay_per_hop(value, depth_ratio.n_layers - 1),
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
