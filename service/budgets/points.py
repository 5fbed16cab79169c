"""How many points a run will store: recorded steps × series, plus the gradient through time.

Which series a run writes (workers/engine/probes.py and trainer.py):
- global: loss, lr, grad_norm_total, grad_norm_total_clipped, clipped, and accuracy for
  classification (every task but `adding`);
- per parameter tensor: grad_norm, grad_mean_abs, grad_std, grad_max_abs, grad_nonfinite,
  weight_norm, update_ratio;
- per layer: backprop_norm (the head too); act_mean, act_std, and act_saturation
  (σ/tanh/softsign, and the LSTM/GRU candidate) or act_dead (rectifiers); LSTM gates
  input/forget/output and GRU gates reset/update, each with its saturation.
A step is recorded when `step % logging.every == 0`, and the last step always is. The
timesteps table has a row on every `logging.timesteps_every`-th recorded step, holding
‖∂L/∂h_t‖ of each recurrent layer at min(T, max_timesteps) timesteps (LSTMs: ‖∂L/∂c_t‖ too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.budgets.parameters import parameter_sizes
from service.budgets.shape import RunShape

GLOBAL_SERIES = 5  # + accuracy for classification
PARAMETER_SERIES = 7
SATURATING = frozenset({"sigmoid", "tanh", "softsign"})  # workers/engine/activations.py
RECTIFYING = frozenset({"relu", "leaky_relu", "elu", "gelu"})
GATE_SERIES = {"lstm": 3 * 2 + 1, "gru": 2 * 2 + 1}  # gates and their saturations + the candidate's


@dataclass(frozen=True)
class PointsEstimate:
    series: int
    recorded_steps: int
    timestep_rows: int
    timestep_values: int  # per row: layers × recorded timesteps (× 2 for LSTMs)

    @property
    def total(self) -> int:
        return self.series * self.recorded_steps + self.timestep_rows * self.timestep_values

    def describe(self) -> str:
        text = f"{self.series} series × {self.recorded_steps:,} recorded steps"
        if self.timestep_rows:
            text += f" + {self.timestep_rows:,} × {self.timestep_values:,} through time"
        return text


def series_count(shape: RunShape) -> int:
    per_layer = 3  # backprop_norm, act_mean, act_std
    if shape.kind in GATE_SERIES:
        per_layer += GATE_SERIES[shape.kind]
    elif shape.activation in SATURATING or shape.activation in RECTIFYING:
        per_layer += 1
    return (
        GLOBAL_SERIES
        + int(shape.classification)
        + PARAMETER_SERIES * len(parameter_sizes(shape))
        + per_layer * shape.depth
        + 1  # the head's backprop_norm
    )


def recorded_steps(steps: int, every: int) -> int:
    """Steps with step % every == 0, plus the last one when it is not among them."""
    return math.ceil(steps / every) + int((steps - 1) % every != 0)


def estimate_points(shape: RunShape) -> PointsEstimate:
    recorded = recorded_steps(shape.steps, shape.log_every)
    rows = values = 0
    if shape.recurrent:
        rows = math.ceil(recorded / shape.timesteps_every)
        timesteps = min(shape.sequence[0], shape.max_timesteps)
        values = shape.num_layers * timesteps * (2 if shape.kind == "lstm" else 1)
    return PointsEstimate(series_count(shape), recorded, rows, values)
