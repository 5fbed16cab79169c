"""Representative points per chunk: a minmax-thinned series read from a few bytes per chunk.

Two-level M4 (Jugel et al. 2014, applied once when a chunk is written and once when a series
is read). When a chunk is written, `representatives` picks the points of it that
`service.analysis.downsample` must never drop: its first and last points, its maximum and
minimum (NaN and +Inf ranking as maxima, -Inf as a minimum, first occurrence on ties), and,
where it has non-finite values, its first NaN, +Inf and -Inf and its largest and smallest
finite values: 4 points for a finite chunk, at most 9. They are stored beside the chunk
(`point_chunks.summary_steps`, `summary_values`).

Why that is enough: every must-keep point of a series (downsample's `_must_keep`) is the
first point of the series satisfying some per-point rule — the first point, the first
occurrence of the largest key, the first NaN, … — or its last point; such a point is the
same rule's point of the first (or last) chunk where the rule matches, so it is among that
chunk's representatives, and no earlier representative matches the rule. The concatenated
representatives of a step range therefore hold the series' global maximum and minimum at
their exact steps, its first and last points and its first non-finite points, and
`downsample(…, max_points, "minmax")` run on them keeps every one of its guarantees.

M4 then draws `max_points / 4` buckets, each its first, minimum, maximum and last point.
The representatives are used only when they outnumber `max_points`, so each bucket spans at
least one chunk's worth of them: bucket extremes are then exact chunk extremes and the line
drawn has the resolution the full read would give, with bucket edges on chunk edges. With
fewer chunks in range (a short run, a narrow step range) the series is read in full.

The read is one query for all requested series, served on PostgreSQL by the covering
index `ix_point_chunks_summary` and concatenated per series by the server (`string_agg`):
about 300 index pages and 10 rows for 10 series of 2,000 chunks, against 20,000 table
pages and 16 MB for the full read. Chunks cut by the step range (at most the first and the
last) are read in full, clipped, and reduced the same way. A series whose chunks overlap (which `_clean` in points.py would
deduplicate) is read in full too, so duplicates resolve exactly as they do there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from service.db.models import PointChunk
from service.store.codec import decode_steps, decode_values, encode_steps, encode_values


def chunks_inside(series_ids: Sequence[int], step_min: int | None, step_max: int | None) -> list[Any]:
    """Conditions for the chunks of `series_ids` wholly inside [step_min, step_max]."""
    inside = [PointChunk.series_id.in_(series_ids)]
    if step_min is not None:
        inside.append(PointChunk.first_step >= step_min)
    if step_max is not None:
        inside.append(PointChunk.last_step <= step_max)
    return inside


def serial_scan(session: Session) -> None:
    """For the rest of this PostgreSQL read transaction, plan without parallel workers.

    The per-chunk reads scan a few hundred index pages; with a step range the planner
    costs them high enough to start parallel workers, whose start-up took longer than the
    scan itself (measured: 15 ms serial, 25-35 ms parallel)."""
    session.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))


def representatives(values: np.ndarray) -> np.ndarray:
    """Indices (ascending, unique) of the points of one chunk that minmax thinning keeps.

    Mirrors `_must_keep` in service/analysis/downsample.py: first, last, argmax and argmin
    (NaN counted as +Inf; ties: the first), and with non-finite values the first NaN, +Inf
    and -Inf and the finite argmax and argmin.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    finite = np.isfinite(values)
    if finite.all():
        return np.unique(np.array([0, n - 1, np.argmax(values), np.argmin(values)], dtype=np.int64))
    key = np.where(np.isnan(values), np.inf, values)
    chosen = [0, n - 1, int(np.argmax(key)), int(np.argmin(key))]
    for mask in (np.isnan(values), values == np.inf, values == -np.inf):
        hits = np.flatnonzero(mask)
        if len(hits):
            chosen.append(int(hits[0]))
    if finite.any():
        finite_index = np.flatnonzero(finite)
        finite_values = values[finite_index]
        chosen += [int(finite_index[np.argmax(finite_values)]), int(finite_index[np.argmin(finite_values)])]
    return np.unique(np.asarray(chosen, dtype=np.int64))


def summary_columns(steps: np.ndarray, values: np.ndarray) -> dict[str, bytes]:
    """The `summary_steps` and `summary_values` of a chunk being written."""
    values = np.asarray(values, dtype=np.float64)
    index = representatives(values)
    return {"summary_steps": encode_steps(steps[index]), "summary_values": encode_values(values[index])}


def read_representatives(
    session: Session,
    series_ids: Sequence[int],
    step_min: int | None,
    step_max: int | None,
    max_points: int,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """series id → the representatives `(steps, values)` of its points in the step range.

    One query for all series. It reads the summary columns of the chunks inside the range
    (from the covering index `ix_point_chunks_summary`, without touching the table when
    its pages are all-visible) and the full points of the chunks the range cuts. Only
    series whose representatives outnumber `max_points` and are strictly ascending (their
    chunks do not overlap) are returned; the caller reads the others in full (they are
    small: at most `max_points` representatives means at most `max_points / 4` chunks).
    """
    if not series_ids:
        return {}
    inside = chunks_inside(series_ids, step_min, step_max)
    if session.get_bind().dialect.name == "postgresql":
        serial_scan(session)
        # One row per series, its chunks' representatives concatenated by the server:
        # turning 2,000 rows per series into Python objects cost more than the query.
        in_order = aggregate_order_by(sa.literal(b"", sa.LargeBinary), PointChunk.first_step)
        whole: sa.Select[Any] = sa.select(
            PointChunk.series_id,
            sa.func.min(PointChunk.first_step).label("first_step"),
            sa.func.string_agg(PointChunk.summary_steps, in_order, type_=sa.LargeBinary).label("steps"),
            sa.func.string_agg(PointChunk.summary_values, in_order, type_=sa.LargeBinary).label("values"),
            sa.true().label("summary"),
        ).group_by(PointChunk.series_id)
    else:  # SQLite has no bytes aggregate (group_concat is for text); it is in-process.
        whole = sa.select(
            PointChunk.series_id,
            PointChunk.first_step,
            PointChunk.summary_steps.label("steps"),
            PointChunk.summary_values.label("values"),
            sa.true().label("summary"),
        )
    parts_of_query: list[sa.Select[Any]] = [whole.where(*inside)]
    # The chunks the range cuts (at most one at each end, unless chunks overlap), read in
    # full and clipped below. Two conditions rather than one OR, so that each is a range
    # scan of the index: the chunk cut by step_min starts before it, the one cut by
    # step_max starts inside the range.
    ids = PointChunk.series_id.in_(series_ids)
    if step_min is not None:
        parts_of_query.append(
            _full_chunks(ids, PointChunk.first_step < step_min, PointChunk.last_step >= step_min)
        )
    if step_max is not None:
        starts_inside = [PointChunk.first_step <= step_max]
        if step_min is not None:
            starts_inside.append(PointChunk.first_step >= step_min)
        parts_of_query.append(_full_chunks(ids, *starts_inside, PointChunk.last_step > step_max))
    query = parts_of_query[0] if len(parts_of_query) == 1 else sa.union_all(*parts_of_query)
    query = query.order_by(sa.literal_column("series_id"), sa.literal_column("first_step"))

    parts: dict[int, tuple[list[bytes], list[bytes]]] = {}
    for series_id, _, steps, values, summary in session.execute(query):
        if not summary:
            steps, values = _clipped_summary(decode_steps(steps), decode_values(values), step_min, step_max)
        step_parts, value_parts = parts.setdefault(series_id, ([], []))
        step_parts.append(steps)
        value_parts.append(values)

    result = {}
    for series_id, (step_parts, value_parts) in parts.items():
        steps = decode_steps(b"".join(step_parts))
        # Each chunk's representatives include its first and last step, so they ascend
        # strictly exactly when the chunks do not overlap (and came in order).
        if len(steps) > max_points and bool(np.all(steps[1:] > steps[:-1])):
            result[series_id] = (steps, decode_values(b"".join(value_parts)))
    return result


def _full_chunks(*where: Any) -> sa.Select[Any]:
    return sa.select(
        PointChunk.series_id, PointChunk.first_step, PointChunk.steps, PointChunk.values, sa.false()
    ).where(*where)


def _clipped_summary(
    steps: np.ndarray, values: np.ndarray, step_min: int | None, step_max: int | None
) -> tuple[bytes, bytes]:
    """The summary columns of the part of a chunk inside [step_min, step_max]."""
    keep = np.ones(len(steps), dtype=bool)
    if step_min is not None:
        keep &= steps >= step_min
    if step_max is not None:
        keep &= steps <= step_max
    columns = summary_columns(steps[keep], values[keep])
    return columns["summary_steps"], columns["summary_values"]
