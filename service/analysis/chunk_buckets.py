"""Bucket means over chunk aggregates: `agg=mean` and the depth profile in O(chunks).

When a series has at least as many chunks as the answer has buckets, its buckets are made
of whole chunks: each bucket start of `downsample(…, "mean")` or `bucket_rows` moves back
to the start of the chunk it falls in (`edges`, the same option on the full computation).
A bucket's sum is then the sum of its chunks' stored sums (service/store/aggregates.py),
its point count the sum of their counts, and no chunk is decoded, except, for `mean`, a
chunk with unevenly spaced steps that holds a bucket's middle point (its step is needed).
Why whole chunks: with arbitrary edges almost every other chunk of a 1,000-bucket view of
2,000 chunks is cut by one and must be read in full; measured, that was slower than reading
everything. Bucket widths still differ by at most one chunk, as M4's do in the thinned
view (service/store/summaries.py).

With fewer chunks than buckets (a short run, a narrow step range) these return None and
the caller reads every point. Results equal `downsample(…, edges=…)` and
`depth_profile(…, edges=…)` over every point, up to the order of floating-point additions
(a chunk is summed on its own first); NaN and ±Inf propagate into their bucket the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.analysis.align import row_bucket_starts
from service.analysis.downsample import bucket_starts, must_keep_points, snap_to_edges
from service.store.aggregates import ChunkTable

# Reads the full points of the chunks at the given positions of a table, in that order.
ChunkReader = Callable[[ChunkTable, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]


def chunk_edges(table: ChunkTable) -> np.ndarray:
    """The index of each chunk's first point among the series' points."""
    return np.concatenate(([0], np.cumsum(table.chunks["n_points"])[:-1])).astype(np.int64)


def _bucket_sums(table: ChunkTable, starts: np.ndarray) -> np.ndarray:
    """Each bucket's sum, buckets starting on chunk edges `starts`."""
    bucket_of_chunk = np.searchsorted(starts, chunk_edges(table), side="right") - 1
    with np.errstate(invalid="ignore", over="ignore"):
        # (bincount of nothing is an int64 array: hence the cast.)
        return np.bincount(bucket_of_chunk, weights=table.chunks["value_sum"], minlength=len(starts)).astype(np.float64)


def _steps_at(table: ChunkTable, index: np.ndarray, read: ChunkReader) -> np.ndarray:
    """The steps of the points at `index`, from each chunk's first step and stride, reading
    the uneven chunks among them."""
    edges = chunk_edges(table)
    chunk = np.searchsorted(edges, index, side="right") - 1
    offset = index - edges[chunk]
    chunks = table.chunks
    steps = chunks["first_step"][chunk] + offset * chunks["stride"][chunk]
    uneven = (chunks["stride"][chunk] == 0) & (offset > 0)
    if uneven.any():
        points = dict(table.points)
        wanted = np.unique(chunk[uneven])
        missing = wanted[~np.isin(wanted, list(points))]
        points.update(zip(missing.tolist(), read(table, missing), strict=True))
        for k in np.flatnonzero(uneven):
            steps[k] = points[int(chunk[k])][0][offset[k]]
    return steps


def mean_from_chunks(table: ChunkTable, max_points: int, read: ChunkReader) -> tuple[np.ndarray, np.ndarray] | None:
    """`downsample(steps, values, max_points, "mean", edges=chunk_edges(table))` of the
    whole series, or None when it has fewer chunks than buckets, or fits the budget."""
    n = table.n_points
    if n <= max_points:
        return None
    keep_steps, keep_values = must_keep_points(table.rep_steps, table.rep_values)
    if len(keep_steps) >= max_points:
        # Too small a budget for anything but the extremes (priority order), as downsample.
        order = np.argsort(keep_steps[:max_points], kind="stable")
        return keep_steps[:max_points][order], keep_values[:max_points][order]
    buckets = max_points - len(keep_steps)
    if len(table.chunks) < buckets:
        return None
    starts = snap_to_edges(bucket_starts(n, buckets), chunk_edges(table))
    sizes = np.diff(np.append(starts, n))
    with np.errstate(invalid="ignore", over="ignore"):
        means = _bucket_sums(table, starts) / sizes
    middle_steps = _steps_at(table, starts + sizes // 2, read)
    keep_mean = ~np.isin(middle_steps, keep_steps)
    steps = np.concatenate([middle_steps[keep_mean], keep_steps])
    values = np.concatenate([means[keep_mean], keep_values])
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


LAYOUT = ["first_step", "last_step", "n_points", "stride"]


def profile_rows_from_chunks(tables: Sequence[ChunkTable], max_rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`bucket_rows(*align(…), max_rows, edges=chunk_edges(…))` of per-layer series that
    share their steps, as `(steps (B,), means (B, L))`; None when they do not share one
    chunk layout of evenly spaced steps, have fewer chunks than `max_rows`, or fit in it."""
    if not tables:
        return None
    layout = tables[0].chunks[LAYOUT]
    if any(not np.array_equal(t.chunks[LAYOUT], layout) for t in tables[1:]):
        return None
    if not np.all((layout["stride"] > 0) | (layout["n_points"] == 1)):
        return None  # unevenly spaced chunks with equal ends may still differ inside
    n = tables[0].n_points
    if n <= max_rows or len(layout) < max_rows:
        return None
    edges = chunk_edges(tables[0])
    starts = snap_to_edges(row_bucket_starts(n, max_rows), edges)
    sizes = np.diff(np.append(starts, n))
    with np.errstate(invalid="ignore", over="ignore"):
        columns = [_bucket_sums(t, starts) / sizes for t in tables]
    # Each row bucket is labelled by its first step: a chunk's first step.
    first_steps = layout["first_step"][np.searchsorted(edges, starts)]
    return first_steps, np.stack(columns, axis=1)
