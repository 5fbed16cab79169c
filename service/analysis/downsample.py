"""Thin a series to at most `max_points` points without losing the steps that matter.

TensorBoard keeps a random reservoir of scalars and W&B samples its history; both can drop
the one step where a gradient explodes. Every aggregation here therefore keeps, whatever
the budget allows:

- the first and the last point;
- the global maximum and minimum, at their exact steps;
- non-finite points, which are the most extreme of all: +Inf and NaN count as maxima and
  -Inf as a minimum, so that a divergence is never thinned away (the first NaN, +Inf and
  -Inf are always kept). Where a series has non-finite points, its largest and smallest
  *finite* values are kept as well.

`minmax` is M4 (Jugel et al. 2014, "M4: a visualization-oriented time series data
aggregation"): each bucket of consecutive points contributes its first, minimum, maximum
and last point, which draws the same line chart as the raw data at a width of
`max_points / 4` pixels. `mean` gives one averaged point per bucket (non-finite values
propagate into their bucket's mean so they stay visible) plus the points above. `lttb` is
Largest-Triangle-Three-Buckets (Steinarsson 2013) over the finite points, computed by
tsdownsample, plus the points above and the start of each non-finite run. `none` returns
the series unchanged.

Everything is vectorised (numpy `reduceat` and tsdownsample); no Python loop visits points.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Aggregation = Literal["minmax", "mean", "lttb", "none"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)

# The smallest budget that holds the first, last, maximum and minimum points of a finite
# series; one with NaN and ±Inf needs up to 7 (its first NaN, +Inf and -Inf, and its
# finite maximum and minimum). Smaller budgets still return at most `max_points` points,
# keeping these in this order of priority: maximum, minimum, first, last, the rest.
MIN_POINTS = 4
MIN_POINTS_NONFINITE = 7


def downsample(
    steps: np.ndarray, values: np.ndarray, max_points: int | None, agg: str = "minmax",
    edges: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Return `(steps, values)` with at most `max_points` points, extremes kept.

    `steps` is int64 (N,) ascending, `values` float64 (N,) with NaN/Inf kept as they are.
    `max_points=None`, `agg="none"` or a series already within budget come back as they
    are (the same arrays, not copies). `edges` (ascending point indices, the first 0), for
    `mean` only: each bucket start moves back to the nearest edge, so that buckets are
    whole chunks (service/analysis/chunk_buckets.py). Raises ValueError for an unknown `agg`, a
    `max_points` below 1, or arrays of different lengths.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}: use one of {', '.join(AGGREGATIONS)}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    if steps.ndim != 1 or steps.shape != values.shape:
        raise ValueError(
            f"steps and values must be 1-D arrays of the same length, got {steps.shape} and {values.shape}"
        )
    n = len(values)
    if max_points is None or agg == "none" or n <= max_points:
        return steps, values

    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    # Keys that rank non-finite points as extremes: +Inf and NaN are the largest values
    # and -Inf the smallest. NaN is never a bucket's minimum (unless the bucket holds
    # nothing else), so a bucket with NaN still shows its -Inf or its finite minimum.
    if all_finite:
        max_key = min_key = values
    else:
        is_nan = np.isnan(values)
        max_key = np.where(is_nan, np.inf, values)
        min_key = max_key

    must_keep, extras = _must_keep(values, finite, all_finite, max_key, min_key)
    if len(must_keep) >= max_points or (agg == "minmax" and max_points - extras < 4):
        # Too small a budget for anything but the extremes (priority order).
        index = np.sort(must_keep[:max_points])
        return steps[index], values[index]

    if agg == "minmax":
        index = _m4_finite(values, max_points) if all_finite else None
        if index is None:
            index = np.union1d(_minmax_index(max_key, min_key, max_points - extras), must_keep)
        return steps[index], values[index]
    if agg == "lttb":
        return _lttb(steps, values, finite, all_finite, must_keep, max_points)
    return _mean(steps, values, must_keep, max_points, edges)


def _must_keep(
    values: np.ndarray, finite: np.ndarray, all_finite: bool, max_key: np.ndarray, min_key: np.ndarray
) -> tuple[np.ndarray, int]:
    """Indices every aggregation keeps, unique, in order of priority; and how many of them
    are beyond the first four (which M4's buckets select by themselves)."""
    n = len(values)
    extremes = [int(np.argmax(max_key)), int(np.argmin(min_key)), 0, n - 1]
    candidates = list(extremes)
    if not all_finite:
        # The first NaN, +Inf and -Inf, and the largest and smallest finite values,
        # which a non-finite extreme would otherwise hide.
        for mask in (np.isnan(values), values == np.inf, values == -np.inf):
            hits = np.flatnonzero(mask)
            if len(hits):
                candidates.append(int(hits[0]))
        if finite.any():
            finite_index = np.flatnonzero(finite)
            finite_values = values[finite_index]
            candidates += [int(finite_index[np.argmax(finite_values)]), int(finite_index[np.argmin(finite_values)])]
    _, first = np.unique(candidates, return_index=True)
    must_keep = np.asarray(candidates, dtype=np.int64)[np.sort(first)]
    return must_keep, len(set(candidates[4:]) - set(extremes))


def must_keep_points(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The `(steps, values)` every aggregation keeps, in order of priority.

    Equal for a series and for any subset of it that holds each of those points and no
    earlier point matching the same rule, such as its chunks' representatives
    (service/store/summaries.py)."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return np.asarray(steps)[:0], values
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    key = values if all_finite else np.where(np.isnan(values), np.inf, values)
    index, _ = _must_keep(values, finite, all_finite, key, key)
    return np.asarray(steps)[index], values[index]


def _m4_finite(values: np.ndarray, max_points: int) -> np.ndarray | None:
    """M4 by tsdownsample (SIMD, several times numpy's speed) for an all-finite series.

    Returns None in the corner case where adding the must-keep points would go over
    budget (tsdownsample broke a tie differently), so that the caller falls back to numpy.
    """
    from tsdownsample import M4Downsampler

    index = np.unique(M4Downsampler().downsample(values, n_out=(max_points // 4) * 4).astype(np.int64))
    chosen = values[index]
    needed = [0, len(values) - 1]
    if chosen.max() < values.max():
        needed.append(int(np.argmax(values)))
    if chosen.min() > values.min():
        needed.append(int(np.argmin(values)))
    index = np.union1d(index, needed)
    return index if len(index) <= max_points else None


def bucket_starts(n: int, buckets: int) -> np.ndarray:
    """Start index of each of `buckets` runs of consecutive points of near-equal size."""
    return np.linspace(0, n, buckets + 1)[:-1].astype(np.int64)


def _first_where(mask: np.ndarray, bucket_of: np.ndarray) -> np.ndarray:
    """Index of the first True of `mask` in each bucket that has one."""
    hits = np.flatnonzero(mask)
    bucket = bucket_of[hits]
    new_bucket = np.empty(len(hits), dtype=bool)
    new_bucket[:1] = True
    np.not_equal(bucket[1:], bucket[:-1], out=new_bucket[1:])
    return hits[new_bucket]


def _minmax_index(max_key: np.ndarray, min_key: np.ndarray, max_points: int) -> np.ndarray:
    """M4 in numpy: the first, last, argmin and argmax of each bucket (ties: first one)."""
    n = len(max_key)
    buckets = max_points // 4
    starts = bucket_starts(n, buckets)
    bucket_of = np.repeat(np.arange(buckets), np.diff(np.append(starts, n)))
    bucket_max = np.maximum.reduceat(max_key, starts)
    bucket_min = np.minimum.reduceat(min_key, starts)
    at_max = _first_where(max_key == bucket_max[bucket_of], bucket_of)
    at_min = _first_where(min_key == bucket_min[bucket_of], bucket_of)
    ends = np.append(starts[1:], n) - 1
    return np.unique(np.concatenate([starts, at_min, at_max, ends]))


def _lttb(
    steps: np.ndarray,
    values: np.ndarray,
    finite: np.ndarray,
    all_finite: bool,
    must_keep: np.ndarray,
    max_points: int,
) -> tuple[np.ndarray, np.ndarray]:
    """LTTB over the finite points; the must-keep points and non-finite markers on top."""
    from tsdownsample import LTTBDownsampler

    extra = must_keep
    if not all_finite:
        # Show where the series goes non-finite: the start of each non-finite run, as
        # many as a quarter of the budget allows, spread evenly over the runs.
        starts = np.flatnonzero(~finite & np.concatenate([[True], finite[:-1]]))
        room = min(max_points // 4, max_points - len(must_keep))
        if len(starts) > room:
            starts = starts[np.unique(np.linspace(0, len(starts) - 1, room).astype(np.int64))]
        extra = np.union1d(must_keep, starts)
    finite_index = np.flatnonzero(finite) if not all_finite else np.arange(len(values))
    budget = max_points - len(extra)
    if budget >= 3 and len(finite_index) > budget:
        chosen = LTTBDownsampler().downsample(steps[finite_index], values[finite_index], n_out=budget)
        index = np.union1d(finite_index[chosen.astype(np.int64)], extra)
    elif budget >= 0 and len(finite_index) <= budget:
        index = np.union1d(finite_index, extra)
    else:
        index = np.sort(extra)
    return steps[index], values[index]


def snap_to_edges(starts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each start moved back to the nearest edge at or before it, repeats dropped
    (`edges` ascending, the first 0)."""
    return np.unique(edges[np.searchsorted(edges, starts, side="right") - 1])


def _mean(
    steps: np.ndarray, values: np.ndarray, must_keep: np.ndarray, max_points: int, edges: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One averaged point per bucket, at the bucket's middle step, plus the must-keep points."""
    n = len(values)
    buckets = max_points - len(must_keep)
    starts = bucket_starts(n, buckets)
    if edges is not None:
        starts = snap_to_edges(starts, edges)
    sizes = np.diff(np.append(starts, n))
    # Non-finite values propagate into their bucket's mean (Inf stays Inf, NaN stays NaN),
    # which keeps a divergence visible at the resolution of one bucket.
    with np.errstate(invalid="ignore", over="ignore"):
        means = np.add.reduceat(values, starts) / sizes
    middle = starts + sizes // 2
    keep_mean = ~np.isin(middle, must_keep)
    index = np.concatenate([middle[keep_mean], must_keep])
    out_values = np.concatenate([means[keep_mean], values[must_keep]])
    order = np.argsort(index, kind="stable")
    return steps[index[order]], out_values[order]
