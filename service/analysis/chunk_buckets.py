"""Bucket means over chunk aggregates: `agg=mean` and the depth profile in O(chunks).

`downsample(…, "mean")` and `bucket_rows` average buckets of consecutive points whose
edges fall anywhere inside a chunk. Their exact result needs, per bucket, the sum of its
points and, for the points they label it with, those points' steps. Both come from the
chunks' aggregates (service/store/aggregates.py) except where a bucket edge cuts a chunk,
or a label falls inside a chunk whose steps are not evenly spaced: only those chunks are
decoded (at most two per bucket), every other one contributes its stored sum. With
1,000,000 points in 50-point chunks and 1,000 buckets that is at most a tenth of the chunks,
and none at all for the labels of regularly recorded runs.

The results equal the full computation's up to the order of floating-point additions
(a chunk is summed on its own first); NaN and ±Inf propagate into their bucket the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.analysis.downsample import bucket_starts, must_keep_points
from service.store.aggregates import ChunkTable

# Reads the full points of the chunks at the given positions of a table, in that order.
ChunkReader = Callable[[ChunkTable, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]


def bucket_sums(table: ChunkTable, starts: np.ndarray, labels: np.ndarray, read: ChunkReader) -> tuple[np.ndarray, np.ndarray]:
    """The sum of the values of each bucket `[starts[b], starts[b+1])` of the series' points
    (the last bucket runs to the end), and the steps of the points at indices `labels`."""
    chunks = table.chunks
    n_points = chunks["n_points"]
    offsets = np.concatenate(([0], np.cumsum(n_points)))  # (C+1,) index of each chunk's first point
    first_bucket = np.searchsorted(starts, offsets[:-1], side="right") - 1
    last_bucket = np.searchsorted(starts, offsets[1:] - 1, side="right") - 1
    label_chunk = np.searchsorted(offsets, labels, side="right") - 1
    irregular_label = np.zeros(len(chunks), dtype=bool)
    irregular_label[label_chunk[(chunks["stride"][label_chunk] == 0) & (n_points[label_chunk] > 1)]] = True
    decode = (first_bucket != last_bucket) | irregular_label
    decode[list(table.points)] = False  # already read (clipped by a step range)
    wanted = np.flatnonzero(decode)
    points = dict(table.points)
    points.update(zip(wanted.tolist(), read(table, wanted), strict=True))

    whole = np.ones(len(chunks), dtype=bool)
    whole[list(points)] = False
    buckets = len(starts)
    with np.errstate(invalid="ignore", over="ignore"):
        # (bincount of nothing is an int64 array: hence the cast.)
        sums = np.bincount(first_bucket[whole], weights=chunks["value_sum"][whole], minlength=buckets).astype(np.float64)
        if points:
            order = sorted(points)
            index = np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in order])
            values = np.concatenate([points[c][1] for c in order])
            sums += np.bincount(np.searchsorted(starts, index, side="right") - 1, weights=values, minlength=buckets)
    label_steps = np.empty(len(labels), dtype=np.int64)
    for k, (chunk, index) in enumerate(zip(label_chunk.tolist(), labels.tolist(), strict=True)):
        offset = index - int(offsets[chunk])
        if chunk in points:
            label_steps[k] = points[chunk][0][offset]
        else:
            label_steps[k] = int(chunks["first_step"][chunk]) + offset * int(chunks["stride"][chunk])
    return sums, label_steps


def mean_from_chunks(table: ChunkTable, max_points: int, read: ChunkReader) -> tuple[np.ndarray, np.ndarray] | None:
    """`downsample(steps, values, max_points, "mean")` of the whole series, or None when
    the series is within budget (the caller then reads its points: there are few)."""
    n = table.n_points
    if n <= max_points:
        return None
    keep_steps, keep_values = must_keep_points(table.rep_steps, table.rep_values)
    if len(keep_steps) >= max_points:
        # Too small a budget for anything but the extremes (priority order), as downsample.
        order = np.argsort(keep_steps[:max_points], kind="stable")
        return keep_steps[:max_points][order], keep_values[:max_points][order]
    buckets = max_points - len(keep_steps)
    starts = bucket_starts(n, buckets)
    sizes = np.diff(np.append(starts, n))
    middle = starts + sizes // 2
    sums, middle_steps = bucket_sums(table, starts, middle, read)
    with np.errstate(invalid="ignore", over="ignore"):
        means = sums / sizes
    keep_mean = ~np.isin(middle_steps, keep_steps)
    steps = np.concatenate([middle_steps[keep_mean], keep_steps])
    values = np.concatenate([means[keep_mean], keep_values])
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


def profile_rows_from_chunks(
    tables: Sequence[ChunkTable], max_rows: int, read: ChunkReader
) -> tuple[np.ndarray, np.ndarray] | None:
    """`bucket_rows(*align(…), max_rows)` of per-layer series that share their steps,
    as `(steps (B,), means (B, L))`; None when they do not share their chunks (the caller
    aligns their points) or fit within `max_rows`."""
    if not tables:
        return None
    layout = tables[0].chunks[["first_step", "last_step", "n_points", "stride"]]
    if any(not np.array_equal(t.chunks[["first_step", "last_step", "n_points", "stride"]], layout) for t in tables[1:]):
        return None
    if not np.all((layout["stride"] > 0) | (layout["n_points"] == 1)):
        return None  # unevenly spaced chunks with equal ends may still differ inside
    if any(t.points for t in tables):
        # Chunks clipped by a step range: their steps must also agree point by point.
        first = tables[0].points
        for t in tables[1:]:
            if set(t.points) != set(first) or any(not np.array_equal(t.points[c][0], first[c][0]) for c in first):
                return None
    n = tables[0].n_points
    if n <= max_rows:
        return None
    # bucket_rows' buckets: each row bucket is labelled by its first step.
    starts = np.linspace(0, n, max_rows + 1)[:-1].astype(np.int64)
    sizes = np.diff(np.append(starts, n))
    columns = []
    label_steps = np.zeros(0, dtype=np.int64)
    for t in tables:
        sums, label_steps = bucket_sums(t, starts, starts, read)
        with np.errstate(invalid="ignore", over="ignore"):
            columns.append(sums / sizes)
    return label_steps, np.stack(columns, axis=1)
