"""One tensor's or layer's histograms over training as a heatmap: step across, bin up.

The colour is the fraction of the tensor's values in each bin, on a log scale by default
(a vanishing gradient moves mass by orders of magnitude, and a few saturated units are still
worth seeing); empty bins are black. Zeros and non-finite values are in no bin: their
fraction at the last histogram step is given under the axes.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize

from service.plots.canvas import empty, figure, png_bytes
from service.plots.profile import _edges as step_edges
from service.store.histograms import HistogramData


def render_histograms(data: HistogramData | None, metric: str, scale: str, title: str, log: bool | None = None) -> bytes:
    with figure() as (fig, (ax,)):
        if data is None or len(data.steps) == 0:
            empty(ax, f"no {metric} histograms recorded yet")
            ax.set_title(f"{title} — {metric}")
            return png_bytes(fig)
        totals = data.counts.sum(axis=1) + sum(column for column in data.special.values())  # (S,)
        fractions = data.counts / np.maximum(totals, 1)[:, None]  # (S, B)
        positive = fractions > 0
        use_log = (True if log is None else log) and positive.any()
        norm = LogNorm(vmin=fractions[positive].min(), vmax=1.0) if use_log else Normalize(vmin=0.0, vmax=max(fractions.max(), 1e-12))
        cmap = colormaps["viridis"].with_extremes(under="black", bad="black")
        shown = np.where(positive, fractions, norm.vmin / 10) if use_log else fractions
        mesh = ax.pcolormesh(step_edges(data.steps), data.edges, shown.T, cmap=cmap, norm=norm)
        ax.set_xlabel("training step")
        ax.set_ylabel("log10 |g|" if metric == "grad_log10_abs" else "value")
        fig.colorbar(mesh, ax=ax, label="fraction of values" + (" (log)" if use_log else ""))
        last = {name: int(column[-1]) / max(int(totals[-1]), 1) for name, column in data.special.items()}
        ax.set_title(f"{title} — {metric} of {data.layer}")
        ax.text(
            0.0, -0.16,
            f"{scale}. At step {int(data.steps[-1])}: zero {last['zero']:.1%}, below range {last['below']:.1%}, "
            f"above {last['above']:.1%}, non-finite {last['nonfinite']:.1%}",
            transform=ax.transAxes, fontsize="small", color="0.3", va="top",
        )  # fmt: skip
        return png_bytes(fig)
