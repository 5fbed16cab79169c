"""What the histogram endpoint returns: per layer, a step × bin matrix of exact counts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

HistogramMetric = Literal["grad_log10_abs", "act_pre", "act_out"]
HISTOGRAM_SCALES = {
    "grad_log10_abs": "log10 |∂L/∂θ| of each parameter tensor's elements, before clipping",
    "act_pre": "the pre-activation s = Wx + b of each MLP layer's units over the batch",
    "act_out": "the output f(s) of each layer's units over the batch (recurrent: h_t at every timestep)",
}


class LayerHistograms(BaseModel):
    layer: str = Field(description="Parameter tensor (gradients) or layer (activations).")
    steps: list[int] = Field(description="Training steps with a histogram: one row each.")
    counts: list[list[int]] = Field(description="steps × bins: how many values fell in [edges[i], edges[i+1]).")
    zero: list[int] = Field(description="Per step: values exactly 0 (not in any bin).")
    below: list[int] = Field(description="Per step: finite non-zero values below edges[0].")
    above: list[int] = Field(description="Per step: finite values at or beyond the last edge.")
    nonfinite: list[int] = Field(description="Per step: NaN and ±Inf.")


class HistogramsResponse(BaseModel):
    experiment_id: str
    metric: HistogramMetric
    scale: str = Field(description="What the bin edges measure.")
    edges: list[float] = Field(description="bins + 1 edges, evenly spaced on the scale.")
    histograms: list[LayerHistograms] = Field(
        description="One per tensor or layer, input → output. Each row sums to the tensor's size."
    )
