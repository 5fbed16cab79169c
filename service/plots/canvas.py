"""Figures without pyplot: each render builds its own `Figure` on an Agg canvas and returns
PNG bytes, so routes can render in worker threads without sharing pyplot's global state.

matplotlib's own caches (fonts, text layout) are not documented as thread-safe, so renders
take one lock; a figure takes tens of milliseconds and the API renders few of them.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")  # no display, ever; must precede any pyplot import elsewhere

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH_IN, HEIGHT_IN, DPI = 9.0, 5.0, 100

# Metrics whose magnitudes span orders of magnitude: plotted on a log axis by default
# (the seed's picture only shows the first layer's gradient next to the last on log y).
LOG_METRICS = frozenset(
    {
        "grad_norm",
        "grad_mean_abs",
        "grad_std",
        "grad_max_abs",
        "grad_norm_total",
        "grad_norm_total_clipped",
        "backprop_norm",
        "update_ratio",
        "weight_norm",
    }
)

_render_lock = threading.Lock()


def default_log(metric: str) -> bool:
    return metric in LOG_METRICS


@contextmanager
def figure(ncols: int = 1, width: float = WIDTH_IN, height: float = HEIGHT_IN) -> Iterator[tuple[Figure, list[Axes]]]:
    """A fresh figure and its axes, under the render lock."""
    with _render_lock:
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
        yield fig, axes


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def can_log(*arrays: np.ndarray) -> bool:
    """A log axis needs at least one positive finite value (else matplotlib warns)."""
    return any(np.any(np.isfinite(a) & (a > 0)) for a in arrays if len(a))


def empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def mark_nonfinite(ax: Axes, steps: np.ndarray, label: str | None = "non-finite") -> None:
    """A red tick along the top of the axes at each step with a NaN/Inf value."""
    if len(steps) == 0:
        return
    ax.plot(
        steps,
        np.ones(len(steps)),
        linestyle="none",
        marker="v",
        color="crimson",
        markersize=7,
        transform=ax.get_xaxis_transform(),
        label=label,
        clip_on=False,
    )
