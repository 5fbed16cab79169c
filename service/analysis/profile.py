"""The depth profile: one metric as a step × layer matrix, input layer first.

This is the data behind the seed's picture: the gradient of each layer over training, with
the first layer's far below the last one's when the gradient vanishes with depth
(Glorot & Bengio 2010, Fig. 7). Every layer is thinned on the same steps, so each row of the
matrix is one moment of training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.analysis.align import align, bucket_rows
from service.store.records import SeriesData


@dataclass(frozen=True)
class DepthProfile:
    metric: str
    layers: list[str]  # input → output
    positions: list[int]
    steps: np.ndarray  # int64 (R,): each row's step (the first step of its bucket when thinned)
    values: np.ndarray  # float64 (R, L); NaN where a layer has no value at that step
    downsampled: bool  # rows are bucket means rather than single steps


def depth_profile(
    metric: str, series: Sequence[SeriesData], max_points: int | None = None, edges: np.ndarray | None = None
) -> DepthProfile:
    """The step × layer matrix of `metric` from its per-layer series.

    `series` may come in any order: columns are sorted by layer position (input first).
    Global series (layer None) are skipped: a depth profile is about layers. `edges`: row
    buckets start on these rows only (`bucket_rows`).
    """
    per_layer = sorted((s for s in series if s.layer is not None), key=lambda s: s.position)
    steps, matrix, present = align([s.steps for s in per_layer], [s.values for s in per_layer])
    thinned_steps, thinned, _ = bucket_rows(steps, matrix, present, max_points, edges)
    return DepthProfile(
        metric=metric,
        layers=[s.layer for s in per_layer if s.layer is not None],
        positions=[s.position for s in per_layer],
        steps=thinned_steps,
        values=thinned,
        downsampled=len(thinned_steps) < len(steps),
    )
