"""The gradient through time of a recurrent network: how far back ‖∂L/∂h_t‖ reaches.

Left: ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ against the timestep, at the first and last recorded training
steps, with the horizon threshold drawn; a plain RNN's curve falls off a cliff, an LSTM's
stays flat. Right: the memory horizon at every recorded training step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from service.analysis.horizon import DEFAULT_THRESHOLD, LayerHorizon
from service.plots.canvas import can_log, empty, figure, png_bytes
from service.store.records import TimestepData


def render_timesteps(
    timesteps: Sequence[TimestepData],
    horizons: Sequence[LayerHorizon],
    title: str,
    threshold: float = DEFAULT_THRESHOLD,
) -> bytes:
    with figure(ncols=2, width=11.0) as (fig, (curves, horizon_ax)):
        if not timesteps or all(len(t.steps) == 0 for t in timesteps):
            empty(curves, "no timestep data: only recurrent models record it")
            empty(horizon_ax, "")
            fig.suptitle(f"{title} — gradient through time")
            return png_bytes(fig)
        colours = colormaps["tab10"](np.arange(10))
        for data, horizon in zip(timesteps, horizons, strict=True):
            if len(data.steps) == 0:
                continue
            colour = colours[data.layer_index % 10]
            with np.errstate(divide="ignore", invalid="ignore"):
                relative = data.hidden_grad_norm / data.hidden_grad_norm[:, -1:]  # (S, T')
            rows = sorted({0, len(data.steps) - 1})
            for row, style in zip(rows, ("--", "-"), strict=False):
                curve = np.where(np.isfinite(relative[row]), relative[row], np.nan)
                curves.plot(data.timesteps, curve, linestyle=style if len(rows) > 1 else "-", color=colour,
                            label=f"layer {data.layer_index}, step {data.steps[row]}")
            horizon_ax.plot(horizon.steps, horizon.horizon, color=colour, label=f"layer {data.layer_index}")
            horizon_ax.axhline(horizon.max_horizon, color="0.6", linestyle=":", linewidth=1)
        curves.axhline(threshold, color="crimson", linestyle=":", linewidth=1, label=f"threshold {threshold:g}")
        if can_log(*(t.hidden_grad_norm.ravel() for t in timesteps)):
            curves.set_yscale("log")
        curves.set_xlabel("timestep t")
        curves.set_ylabel("‖∂L/∂h_t‖ / ‖∂L/∂h_T‖")
        curves.grid(True, alpha=0.3)
        curves.legend(fontsize="small")
        curves.set_title("gradient back through time")
        horizon_ax.set_xlabel("training step")
        horizon_ax.set_ylabel("memory horizon (timesteps back)")
        horizon_ax.set_ylim(bottom=0)
        horizon_ax.grid(True, alpha=0.3)
        horizon_ax.legend(fontsize="small")
        horizon_ax.set_title(f"memory horizon (≥ {threshold:g}·‖∂L/∂h_T‖; dotted: sequence)")
        fig.suptitle(f"{title} — gradient through time")
        return png_bytes(fig)
