"""Measurements taken on a schedule of their own ride along with the Recorder's batches.

The Recorder hands out a batch of every recorded step since the last flush; the curvature
(every `curvature.every` training steps) and the histograms (every `histogram_every`-th
recorded step) keep their own device buffers, and are added to that batch as it goes out,
up to its last step. What lies beyond a diverged run's last kept step is never handed out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .records import ProbeBatch


def attach(on_flush: Callable[[ProbeBatch], None], curvature=None, histograms=None) -> Callable[[ProbeBatch], None]:
    """`on_flush` with the curvature series and histograms due by each batch's last step added."""
    if curvature is None and histograms is None:
        return on_flush

    def flush(batch: ProbeBatch) -> None:
        if len(batch.steps):
            last = int(batch.steps[-1])
            extra = {}
            if curvature is not None:
                extra["sparse_values"] = {**batch.sparse_values, **curvature.take(last)}
            if histograms is not None:
                extra["histograms"] = histograms.take(last)
            batch = dataclasses.replace(batch, **extra)
        on_flush(batch)

    return flush
