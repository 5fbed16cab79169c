"""The memory horizon of a recurrent network: how far back through time its gradient reaches.

For each recorded training step the engine measures ‖∂L/∂h_t‖ at every (recorded) timestep
t of the sequence. Bengio, Simard & Frasconi (1994) and Pascanu et al. (2013) show that in
a plain RNN this norm shrinks geometrically as t moves away from the loss, so inputs far in
the past cannot change the weights: the network's *memory horizon* is how many timesteps
back the norm stays at or above `threshold` (1e-3 by default) times ‖∂L/∂h_T‖. An LSTM's
cell state keeps it near 1 (Hochreiter & Schmidhuber 1997), so its horizon spans the
sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.store.records import TimestepData

DEFAULT_THRESHOLD = 1e-3


@dataclass(frozen=True)
class LayerHorizon:
    """The memory horizon of one recurrent layer at each recorded training step."""

    layer_index: int
    steps: np.ndarray  # int64 (S,)
    # Timesteps back from the last one over which ‖∂L/∂h_t‖ ≥ threshold · ‖∂L/∂h_T‖
    # without interruption; NaN where ‖∂L/∂h_T‖ is zero or non-finite.
    horizon: np.ndarray  # float64 (S,)
    # True where the gradient stays above the threshold all the way to the first timestep.
    reaches_start: np.ndarray  # bool (S,)
    # ‖∂L/∂h_first‖ / ‖∂L/∂h_T‖: the engine issue's measure of the same decay.
    first_to_last: np.ndarray  # float64 (S,)
    max_horizon: int  # last recorded timestep minus the first: the longest possible horizon


def memory_horizon(data: TimestepData, threshold: float = DEFAULT_THRESHOLD) -> LayerHorizon:
    """The horizon per recorded step of one layer's ‖∂L/∂h_t‖ matrix (S, T')."""
    norms = np.asarray(data.hidden_grad_norm, dtype=np.float64)  # (S, T')
    timesteps = np.asarray(data.timesteps, dtype=np.int64)  # (T',)
    if norms.ndim != 2 or norms.shape[1] != len(timesteps) or len(timesteps) == 0:
        raise ValueError(
            f"hidden_grad_norm must be (steps, timesteps) = (S, {len(timesteps)}), got {norms.shape}"
        )
    last = norms[:, -1:]  # (S, 1): ‖∂L/∂h_T‖
    defined = np.isfinite(last[:, 0]) & (last[:, 0] > 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        relative = norms / last  # (S, T')
    # A non-finite norm ends the horizon: it carries no usable gradient, only a divergence.
    above = np.isfinite(relative) & (relative >= threshold)
    # Read each row from the last timestep backwards; the horizon ends at the first dip.
    stays = np.logical_and.accumulate(above[:, ::-1], axis=1)[:, ::-1]  # (S, T')
    reaches_start = stays[:, 0] & defined
    # Index of the earliest timestep from which the norm stays above the threshold.
    earliest = np.where(reaches_start, 0, len(timesteps) - np.argmin(stays[:, ::-1], axis=1))
    earliest = np.minimum(earliest, len(timesteps) - 1)
    horizon = (timesteps[-1] - timesteps[earliest]).astype(np.float64)
    horizon[~defined] = np.nan
    first_to_last = np.where(defined, relative[:, 0], np.nan)
    return LayerHorizon(
        layer_index=data.layer_index,
        steps=np.asarray(data.steps, dtype=np.int64),
        horizon=horizon,
        reaches_start=reaches_start,
        first_to_last=first_to_last,
        max_horizon=int(timesteps[-1] - timesteps[0]),
    )


def memory_horizons(
    layers: Sequence[TimestepData], threshold: float = DEFAULT_THRESHOLD
) -> list[LayerHorizon]:
    """`memory_horizon` for every recurrent layer, in the order given."""
    return [memory_horizon(data, threshold) for data in layers]


def final_horizon(layer: LayerHorizon, tail_fraction: float = 0.1) -> float:
    """The horizon after training: the median over the last `tail_fraction` of recorded steps.

    A median over a window rather than the last step alone, because single mini-batches
    differ (the adding problem's markers fall at random positions). NaN if undefined.
    """
    defined = layer.horizon[np.isfinite(layer.horizon)]
    if len(defined) == 0:
        return float("nan")
    window = max(1, int(np.ceil(len(defined) * tail_fraction)))
    return float(np.median(defined[-window:]))
