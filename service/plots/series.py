"""One metric over training, one curve per layer: the seed's picture.

Layers are coloured along a sequential colour map from the input (dark) to the output
(light), and the legend lists them in that order, so the first layer's gradient sitting
orders of magnitude below the last layer's reads at a glance on the log axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from service.plots.canvas import can_log, default_log, empty, figure, mark_nonfinite, png_bytes
from service.store.records import SeriesData


def render_metric(
    series: Sequence[SeriesData], metric: str, title: str, log: bool | None = None
) -> bytes:
    """PNG of `metric` per layer over steps; `log=None` picks log y for gradient magnitudes."""
    ordered = sorted(series, key=lambda s: s.position)
    use_log = default_log(metric) if log is None else log
    with figure() as (fig, (ax,)):
        if not ordered or all(len(s.steps) == 0 for s in ordered):
            empty(ax, f"no {metric} recorded yet")
        else:
            colours = colormaps["viridis"](np.linspace(0.0, 0.85, max(len(ordered), 1)))
            nonfinite_steps = []
            for colour, one in zip(colours, ordered, strict=True):
                finite = np.isfinite(one.values)
                nonfinite_steps.append(one.steps[~finite])
                # NaN breaks the line where the value is missing instead of joining across it.
                # Biases dashed beside their weights, which share the layer's colour family.
                is_bias = one.layer is not None and one.layer.rsplit(".", 1)[-1].startswith("bias")
                ax.plot(one.steps, np.where(finite, one.values, np.nan), color=colour, linewidth=1.2,
                        linestyle="--" if is_bias else "-", label=one.layer if one.layer is not None else metric)
            if use_log and can_log(*(s.values for s in ordered)):
                ax.set_yscale("log")
            mark_nonfinite(ax, np.unique(np.concatenate(nonfinite_steps)))
            ax.set_xlabel("training step")
            ax.set_ylabel(metric + (" (log)" if ax.get_yscale() == "log" else ""))
            ax.grid(True, which="major", alpha=0.3)
            layered = any(s.layer is not None for s in ordered)
            ax.legend(title="input → output" if layered and len(ordered) > 1 else None,
                      fontsize="small", loc="best", ncols=2 if len(ordered) > 8 else 1)
        ax.set_title(f"{title} — {metric}")
        return png_bytes(fig)
