"""What the summary of an experiment holds: its numbers, findings and remedies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.store.histograms import HistogramData
from service.store.records import SeriesData, TimestepData

# `not_learning`: the loss stays at the task's trivial baseline with no gradient pathology to
# blame; `no_data`: nothing was recorded (queued, or failed before its first step).
Verdict = Literal["vanishing", "exploding", "not_learning", "healthy", "no_data"]


@dataclass(frozen=True)
class DiagnosisInput:
    """What `diagnose` reads: the experiment's spec and status, its series, its timesteps."""

    spec: Mapping[str, Any]  # the ExperimentSpec as JSON (model, clipping, …)
    series: Mapping[str, Sequence[SeriesData]]  # metric → its series, input → output
    timesteps: Sequence[TimestepData] = ()
    status: str | None = None
    result: Mapping[str, Any] | None = None
    name: str | None = None
    activation_histograms: Sequence[HistogramData] = ()  # act_pre per layer (logging.histogram_every)


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
class LearningSummary:
    baseline: dict[str, Any]  # the result's `baseline`: predictor, loss, train_loss, test_loss, chance_accuracy
    train_loss: float | None  # median of the recorded training loss over the last `late_fraction` of steps
    test_loss: float | None  # on the held-out split after training (succeeded runs only)
    train_ratio: float | None  # train_loss / the baseline's train_loss
    test_ratio: float | None  # test_loss / the baseline's test_loss
    test_accuracy: float | None
    chance_accuracy: float | None
    judged_on: str | None  # "test" | "train": the split the finding reads (test when there is one)
    learned: bool | None  # None when there is no loss to judge


@dataclass(frozen=True)
class SharpnessSummary:
    """λ_max of the training loss (series `hessian_max_eig`) against c/η (service/analysis/sharpness.py)."""

    measurements: int
    stability_factor: float | None  # c: 2 for SGD, 2 + 2β with momentum β; None for adaptive optimisers
    at_start: float
    maximum: float | None
    final: float | None  # median over the last `late_fraction` of measurements
    final_limit: float | None  # c/η at the last measurement
    final_ratio: float | None  # median over the same measurements of λ_max / (c/η)
    first_step_at_limit: int | None  # first measurement within the tolerance of the limit (or above it)


@dataclass(frozen=True)
class LayerSaturation:
    """One layer's saturated fraction of pre-activations over its histogram steps (service/analysis/saturation.py)."""

    layer: str
    counting_edge: float  # |s| ≥ this bin edge is counted: the first edge at or beyond the bound
    derivative_at_edge: float  # f'(edge) / max f'
    at_start: float
    at_end: float
    median: float
    maximum: float
    maximum_step: int
    steps_saturated: int  # histogram steps with the fraction at or above `saturation_fraction`
    first_step_saturated: int | None
    last_step_saturated: int | None
    histogram_steps: int
    nonfinite: int  # NaN/Inf pre-activations over the run, left out of the fractions
    per_step: SeriesPoints  # the fraction at every histogram step


@dataclass(frozen=True)
class SaturationSummary:
    activation: str
    bound: float  # |s| beyond which f'(s) < saturation_derivative · max f'
    layers: list[LayerSaturation]  # input → output


@dataclass(frozen=True)
class Finding:
    kind: str  # vanishing_depth | vanishing_time | exploding | clipping_controls | nonfinite | …
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Remedy:
    problem: Literal["vanishing", "exploding", "not_learning", "saturation"]
    action: str
    reference: str
    # Spec changes that apply the remedy, by dotted path (e.g. {"clipping.mode": "norm"}).
    spec_changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    verdict: Verdict
    headline: str  # one sentence: the verdict with its main evidence
    findings: list[Finding]
    remedies: list[Remedy]
    thresholds: dict[str, float]
    layers: list[LayerSummary]
    depth_ratio: DepthRatio | None  # grad_mean_abs of weights, first / last
    backprop_ratio: DepthRatio | None  # backprop_norm, first / last
    grad_norm: GradNormSummary | None
    nonfinite: NonFiniteSummary
    horizon: list[HorizonSummary]
    learning: LearningSummary | None  # final losses against the task's trivial baseline
    sharpness: SharpnessSummary | None = None  # with logging.curvature_every
    saturation: SaturationSummary | None = None  # σ/tanh/softsign MLPs with logging.histogram_every
