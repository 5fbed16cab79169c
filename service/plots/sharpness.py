"""The sharpness λ_max of the training loss over training, against SGD's stability limit 2/η.

Gradient descent on a quadratic with curvature λ diverges once λ > 2/η; Cohen et al. 2021
(Fig. 1) find that full-batch GD on neural networks raises λ_max until it reaches 2/η and
then hovers just above it, the edge of stability. The limit is drawn from the run's own
learning-rate series, so a schedule shows as a moving line.
"""

from __future__ import annotations

import numpy as np

from service.plots.canvas import empty, figure, mark_nonfinite, png_bytes
from service.store.records import SeriesData


def render_sharpness(
    sharpness: SeriesData | None, trace: SeriesData | None, lr: SeriesData | None, stability_factor: float | None, title: str
) -> bytes:
    """`stability_factor`: c in the limit c/η (2 for SGD, 2 + 2β with heavy-ball momentum β,
    Cohen et al. 2021 §2); None when the optimiser has no such limit (Adam, RMSprop)."""
    with figure() as (fig, (ax,)):
        if sharpness is None or len(sharpness.steps) == 0:
            empty(ax, "no hessian_max_eig recorded: set logging.curvature_every")
            ax.set_title(f"{title} — sharpness")
            return png_bytes(fig)
        finite = np.isfinite(sharpness.values)
        ax.plot(sharpness.steps[finite], sharpness.values[finite], marker=".", color="tab:blue", label="λ_max (hessian_max_eig)")
        mark_nonfinite(ax, sharpness.steps[~finite])
        if lr is not None and len(lr.steps) and stability_factor is not None:
            label = "2/η" if stability_factor == 2.0 else f"{stability_factor:g}/η"
            ax.plot(lr.steps, stability_factor / lr.values, color="crimson", linestyle="--", label=label)
        if trace is not None and len(trace.steps):
            right = ax.twinx()
            right.plot(trace.steps, trace.values, color="0.5", linewidth=1, label="tr(H) (hessian_trace)")
            right.set_ylabel("tr(H)", color="0.4")
        ax.set_xlabel("training step")
        ax.set_ylabel("largest Hessian eigenvalue")
        ax.legend(loc="best", fontsize="small")
        note = "" if stability_factor is not None else " (adaptive optimiser: no c/η limit drawn)"
        ax.set_title(f"{title} — sharpness{note}")
        return png_bytes(fig)
