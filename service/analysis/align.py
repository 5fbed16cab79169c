"""Put several series on one step axis, and thin that axis the same way for all of them.

A depth profile (one column per layer) and a sweep comparison (one column per experiment)
are both step × column matrices. Their columns must share the same rows, so they are
aligned on the union of their steps (a step a column lacks is missing, not zero), and
downsampled by averaging buckets of consecutive rows rather than by picking different
steps for each column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.analysis.downsample import snap_to_edges


def align(steps: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align columns on the union of their steps.

    Returns `(steps (R,), matrix (R, C), present (R, C))`: `matrix` holds each column's
    value at each step (NaN where it has none, and NaN/Inf where it measured one), and
    `present` tells the two kinds of NaN apart.
    """
    union = np.unique(np.concatenate([np.asarray(s, dtype=np.int64) for s in steps])) if steps else np.zeros(0, np.int64)
    matrix = np.full((len(union), len(steps)), np.nan)
    present = np.zeros((len(union), len(steps)), dtype=bool)
    for column, (column_steps, column_values) in enumerate(zip(steps, values, strict=True)):
        rows = np.searchsorted(union, column_steps)  # vectorised over points; a loop over columns only
        matrix[rows, column] = column_values
        present[rows, column] = True
    return union, matrix, present


def row_bucket_starts(n_rows: int, max_rows: int) -> np.ndarray:
    """The first row of each of `max_rows` buckets of consecutive rows."""
    return np.linspace(0, n_rows, max_rows + 1)[:-1].astype(np.int64)


def bucket_rows(
    steps: np.ndarray, matrix: np.ndarray, present: np.ndarray, max_rows: int | None,
    edges: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Average buckets of consecutive rows so that at most `max_rows` remain.

    Each bucket is labelled by its first step. A cell is the mean of the column's values
    in the bucket; a non-finite value makes the whole cell non-finite (Inf stays Inf, NaN
    stays NaN), so that a divergence is never averaged away; a cell with no value at all is
    NaN. Returns `(steps, matrix, present)` like `align`; unchanged within budget.
    `edges` (ascending row indices, the first 0): bucket starts move back to the nearest
    edge, so that buckets are whole chunks (service/analysis/chunk_buckets.py).
    """
    n_rows = len(steps)
    if max_rows is None or n_rows <= max_rows:
        return steps, matrix, present
    if max_rows < 1:
        raise ValueError(f"max_points must be at least 1, got {max_rows}")
    starts = row_bucket_starts(n_rows, max_rows)
    if edges is not None:
        starts = snap_to_edges(starts, edges)
    filled = np.where(present, matrix, 0.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        sums = np.add.reduceat(filled, starts, axis=0)  # (B, C)
        counts = np.add.reduceat(present.astype(np.int64), starts, axis=0)
        means = sums / counts
    bucket_present = counts > 0
    means[~bucket_present] = np.nan
    return steps[starts], means, bucket_present
