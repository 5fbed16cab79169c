"""Compared runs (a sweep's members, or any experiments) on one metric: each group's seed mean as a line, its min–max over seeds as a band."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from service.analysis.compare import Comparison, drawn_layers
from service.plots.canvas import can_log, default_log, empty, figure, png_bytes


def render_compare(comparison: Comparison, title: str, log: bool | None = None) -> bytes:
    use_log = default_log(comparison.metric) if log is None else log
    with figure() as (fig, (ax,)):
        steps = comparison.steps
        groups = [g for g in comparison.groups if np.isfinite(g.mean).any()]
        if len(steps) == 0 or not groups:
            empty(ax, f"no {comparison.metric} recorded yet by the compared runs")
        else:
            colours = colormaps["tab10"](np.arange(10))
            for index, group in enumerate(groups):
                colour = colours[index % 10]
                seeds = len(group.experiment_ids)
                label = (group.label or "all") + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
                ax.plot(steps, group.mean, color=colour, linewidth=1.4, label=label)
                if seeds > 1:
                    ax.fill_between(steps, group.minimum, group.maximum, color=colour, alpha=0.2, linewidth=0)
            if use_log and can_log(*(g.minimum for g in groups), *(g.mean for g in groups)):
                ax.set_yscale("log")
            ax.set_xlabel("training step")
            drawn = drawn_layers(comparison)
            layer = f" [{', '.join(drawn)}]" if drawn else ""
            ax.set_ylabel(comparison.metric + layer)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small", title="band: min–max over seeds")
        ax.set_title(f"{title} — {comparison.metric}")
        return png_bytes(fig)
