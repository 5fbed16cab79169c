"""What the analysis endpoints return: depth profile, memory horizon, diagnosis summary.

These models document the responses (OpenAPI); the routes render the analysis dataclasses
straight to JSON with orjson, so NaN and ±Inf come out as null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ProfileResponse(BaseModel):
    experiment_id: str
    metric: str
    layers: list[str] = Field(description="Columns, input → output.")
    positions: list[int]
    steps: list[int] = Field(description="Rows: a step each (the first step of its bucket when downsampled).")
    values: list[list[float | None]] = Field(description="steps × layers; null where missing or non-finite.")
    downsampled: bool = Field(description="Rows are means over buckets of consecutive steps.")


class LayerHorizonResponse(BaseModel):
    layer_index: int
    max_horizon: int = Field(description="Last recorded timestep minus the first.")
    steps: list[int]
    horizon: list[float | None] = Field(
        description="Timesteps back over which ‖∂L/∂h_t‖ ≥ threshold·‖∂L/∂h_T‖, per recorded step."
    )
    reaches_start: list[bool]
    first_to_last: list[float | None] = Field(description="‖∂L/∂h_first‖ / ‖∂L/∂h_T‖ per recorded step.")


class HorizonResponse(BaseModel):
    experiment_id: str
    threshold: float
    layers: list[LayerHorizonResponse]


class Points(BaseModel):
    steps: list[int]
    values: list[float | None]


class LayerSummary(BaseModel):
    layer: str
    position: int
    medians: dict[str, float | None] = Field(description="Metric → median of its finite values over the run.")


class AdjacentDecay(BaseModel):
    lower: str
    upper: str
    ratio_at_start: float | None
    ratio_median: float | None


class DepthRatio(BaseModel):
    metric: str
    first_layer: str
    last_layer: str
    n_layers: int
    start_step: int
    at_start: float | None
    median: float | None
    minimum: float | None
    maximum: float | None
    at_end: float | None
    decay_per_layer_at_start: float | None = Field(description="Geometric mean of adjacent-layer ratios.")
    decay_per_layer_median: float | None
    adjacent: list[AdjacentDecay]
    per_step: Points


class GradNormSummary(BaseModel):
    clipping_mode: str
    clipping_threshold: float | None
    recorded_steps: int
    clipped_steps: int
    clipped_fraction: float
    pre_clip_mean: float | None
    pre_clip_median: float | None
    pre_clip_p95: float | None
    pre_clip_max: float | None
    pre_clip_max_step: int | None
    early_mean: float | None
    early_median: float | None
    growth: float | None
    post_clip_max: float | None


class NonFiniteSummary(BaseModel):
    steps: int
    first_step: int | None
    metrics: list[str]
    layers: list[str]
    diverged_at_step: int | None


class HorizonSummary(BaseModel):
    layer_index: int
    sequence_timesteps: int
    at_start: float | None
    final: float | None
    final_fraction: float | None
    final_first_to_last: float | None
    per_step: Points


class LearningSummary(BaseModel):
    baseline: dict[str, Any] = Field(
        description="The input-blind predictor's losses on this run's data (see ExperimentResult.baseline)."
    )
    train_loss: float | None = Field(description="Median training loss over the last recorded steps.")
    test_loss: float | None
    train_ratio: float | None = Field(description="train_loss over the baseline's.")
    test_ratio: float | None = Field(description="test_loss over the baseline's.")
    test_accuracy: float | None
    chance_accuracy: float | None
    judged_on: Literal["test", "train"] | None
    learned: bool | None = Field(
        description="The judged ratio below GRADWATCH_DIAGNOSIS_NOT_LEARNING_LOSS_RATIO; null with no loss."
    )


class SharpnessSummary(BaseModel):
    measurements: int
    stability_factor: float | None = Field(description="c in the limit c/η: 2 for SGD, 2 + 2β with momentum β.")
    at_start: float | None
    maximum: float | None
    final: float | None = Field(description="λ_max, median over the last measurements.")
    final_limit: float | None = Field(description="c/η at the last measurement.")
    final_ratio: float | None = Field(description="λ_max / (c/η), median over the last measurements.")
    first_step_at_limit: int | None


class LayerSaturation(BaseModel):
    layer: str
    counting_edge: float = Field(description="|s| ≥ this bin edge is counted: the first edge at or beyond the bound.")
    derivative_at_edge: float = Field(description="f'(counting_edge) / max f'.")
    at_start: float
    at_end: float
    median: float
    maximum: float
    maximum_step: int
    steps_saturated: int = Field(description="Histogram steps with at least GRADWATCH_DIAGNOSIS_SATURATION_FRACTION saturated.")
    first_step_saturated: int | None
    last_step_saturated: int | None
    histogram_steps: int
    nonfinite: int = Field(description="NaN/Inf pre-activations over the run, left out of the fractions.")
    per_step: Points = Field(description="The saturated fraction at every histogram step.")


class SaturationSummary(BaseModel):
    activation: str
    bound: float = Field(description="|s| beyond which f'(s) < GRADWATCH_DIAGNOSIS_SATURATION_DERIVATIVE · max f'.")
    layers: list[LayerSaturation] = Field(description="Input → output, from the act_pre histograms.")


class Finding(BaseModel):
    kind: str = Field(
        description="vanishing_depth | vanishing_time | exploding | clipping_controls | small_first_layer_gradient "
        "| not_learning | no_data | edge_of_stability | saturation"
    )
    message: str
    evidence: dict[str, Any]


class Remedy(BaseModel):
    problem: Literal["vanishing", "exploding", "not_learning", "saturation"]
    action: str
    reference: str
    spec_changes: dict[str, Any] = Field(description="Dotted spec path → value that applies the remedy.")


class SummaryResponse(BaseModel):
    experiment_id: str
    name: str
    status: str
    verdict: Literal["vanishing", "exploding", "not_learning", "healthy", "no_data"] = Field(
        description="`not_learning`: the loss stays at the task's trivial baseline with no gradient pathology "
        "to blame (with one, the pathology is the verdict and the headline says both); `no_data`: nothing "
        "recorded yet (queued) or ever (failed before its first step)."
    )
    headline: str = Field(description="One sentence: the verdict and its main evidence.")
    findings: list[Finding]
    remedies: list[Remedy]
    thresholds: dict[str, float]
    layers: list[LayerSummary]
    depth_ratio: DepthRatio | None = Field(description="grad_mean_abs of the weights, first / last layer.")
    backprop_ratio: DepthRatio | None = Field(description="backprop_norm ‖∂L/∂s‖, first / last layer.")
    grad_norm: GradNormSummary | None
    nonfinite: NonFiniteSummary
    horizon: list[HorizonSummary]
    learning: LearningSummary | None = Field(description="Final losses against the task's trivial baseline.")
    sharpness: SharpnessSummary | None = Field(
        None, description="λ_max of the training loss against 2/η (runs with logging.curvature_every)."
    )
    saturation: SaturationSummary | None = Field(
        None,
        description="Saturated pre-activations per layer of a σ/tanh/softsign MLP (runs with logging.histogram_every).",
    )
