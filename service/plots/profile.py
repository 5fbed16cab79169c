"""The depth profile as a heatmap: training step across, layer up (input at the bottom).

A logarithmic colour scale, because a vanishing gradient differs by orders of magnitude
between the first and the last layer; cells with a non-finite value are drawn in red.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize

from service.analysis.profile import DepthProfile
from service.plots.canvas import default_log, empty, figure, png_bytes


def _edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around each row's step (each cell spans to the next row's step)."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    last = steps[-1] + (steps[-1] - steps[-2])
    return np.append(steps, last).astype(np.float64)


def render_profile(profile: DepthProfile, title: str, log: bool | None = None) -> bytes:
    with figure(height=max(3.5, 1.2 + 0.35 * len(profile.layers))) as (fig, (ax,)):
        if len(profile.steps) == 0 or not profile.layers:
            empty(ax, f"no per-layer {profile.metric} recorded yet")
            ax.set_title(f"{title} — {profile.metric} by depth")
            return png_bytes(fig)
        values = profile.values.T  # (L, R): a row per layer
        finite = np.isfinite(values)
        positive = finite & (values > 0)
        use_log = (default_log(profile.metric) if log is None else log) and positive.any()
        if use_log:
            norm = LogNorm(vmin=values[positive].min(), vmax=values[positive].max())
        else:
            low = values[finite].min() if finite.any() else 0.0
            high = values[finite].max() if finite.any() else 1.0
            norm = Normalize(vmin=low, vmax=high if high > low else low + 1.0)
        cmap = colormaps["magma"].with_extremes(bad="crimson", under="black")
        shown = np.ma.masked_where(~finite, values)
        if use_log:
            # Zeros (a dead layer) are below any log scale: draw them as "under".
            shown = np.ma.masked_where(~finite, np.where(finite & (values <= 0), norm.vmin / 10, values))
        mesh = ax.pcolormesh(_edges(profile.steps), np.arange(len(profile.layers) + 1), shown, cmap=cmap, norm=norm)
        ax.set_yticks(np.arange(len(profile.layers)) + 0.5, labels=profile.layers, fontsize="small")
        ax.set_xlabel("training step" + (" (bucket means)" if profile.downsampled else ""))
        ax.set_ylabel("layer (input at the bottom)")
        fig.colorbar(mesh, ax=ax, label=profile.metric + (" (log)" if use_log else ""), extend="min" if use_log else "neither")
        ax.set_title(f"{title} — {profile.metric} by depth")
        return png_bytes(fig)
