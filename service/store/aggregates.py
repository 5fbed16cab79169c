"""Per-chunk aggregates: bucket means of a series read from 40 bytes per chunk.

Each `point_chunks` row carries `aggregates`, one record of `AGGREGATE_DTYPE`: the chunk's
first and last step, its number of points, the spacing of its steps (`stride`, 0 when they
are not evenly spaced) and the sum of its values (NaN and ±Inf included, so a non-finite
point makes the sum non-finite exactly as it makes a bucket's mean non-finite). A mean over
a bucket of consecutive points is then the sum of the whole chunks inside it plus the
points of the at most two chunks its edges cut (service/analysis/chunk_buckets.py), and
`stride` gives the step of any point of a regular chunk without decoding it.

Read like the representatives (service/store/summaries.py): one query for all requested
series, concatenated per series by PostgreSQL's `string_agg` from the covering index
`ix_point_chunks_summary`, which includes this column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from service.db.models import PointChunk
from service.store.codec import decode_steps, decode_values
from service.store.summaries import chunks_inside, representatives, serial_scan

AGGREGATE_DTYPE = np.dtype(
    [("first_step", "<i8"), ("last_step", "<i8"), ("n_points", "<i8"), ("stride", "<i8"), ("value_sum", "<f8")]
)


def aggregate_record(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The one-element AGGREGATE_DTYPE array of a chunk (non-empty, steps ascending)."""
    steps = np.asarray(steps, dtype=np.int64)
    gaps = np.diff(steps)
    stride = int(gaps[0]) if len(gaps) and bool(np.all(gaps == gaps[0])) else 0
    record = np.zeros(1, dtype=AGGREGATE_DTYPE)
    with np.errstate(invalid="ignore", over="ignore"):
        record[0] = (int(steps[0]), int(steps[-1]), len(steps), stride, float(np.sum(np.asarray(values, np.float64))))
    return record


def aggregate_column(steps: np.ndarray, values: np.ndarray) -> dict[str, bytes]:
    """The `aggregates` column of a chunk being written."""
    return {"aggregates": aggregate_record(steps, values).tobytes()}


@dataclass(frozen=True)
class ChunkTable:
    """The chunks of one series inside a step range, in step order.

    `chunks` holds one AGGREGATE_DTYPE record per chunk; `points[i]`, where present, are
    chunk i's `(steps, values)` already read (the chunks a step range cuts, clipped to it).
    `rep_steps`/`rep_values` are the chunks' representative points (summaries.py).
    """

    series_id: int
    chunks: np.ndarray
    points: dict[int, tuple[np.ndarray, np.ndarray]]
    rep_steps: np.ndarray
    rep_values: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.chunks["n_points"].sum())


def read_chunk_tables(
    session: Session, series_ids: Sequence[int], step_min: int | None, step_max: int | None
) -> dict[int, ChunkTable]:
    """series id → its ChunkTable in [step_min, step_max], for the series whose chunks do
    not overlap and all carry aggregates (the caller reads the others in full)."""
    if not series_ids:
        return {}
    inside = chunks_inside(series_ids, step_min, step_max)
    if session.get_bind().dialect.name == "postgresql":
        # As in summaries.py: one row per series, concatenated by the server.
        serial_scan(session)
        in_order = aggregate_order_by(sa.literal(b"", sa.LargeBinary), PointChunk.first_step)

        def joined(column: Any, name: str) -> Any:
            return sa.func.string_agg(column, in_order, type_=sa.LargeBinary).label(name)

        query = sa.select(
            PointChunk.series_id,
            joined(PointChunk.aggregates, "aggregates"),
            joined(PointChunk.summary_steps, "rep_steps"),
            joined(PointChunk.summary_values, "rep_values"),
            sa.func.count().label("n_chunks"),
            sa.func.count(PointChunk.aggregates).label("n_aggregated"),
        ).where(*inside).group_by(PointChunk.series_id)
        rows = [(r.series_id, r.aggregates, r.rep_steps, r.rep_values, r.n_chunks == r.n_aggregated) for r in session.execute(query)]
    else:  # SQLite has no bytes aggregate; it is in-process, so rows are cheap.
        query = sa.select(
            PointChunk.series_id, PointChunk.aggregates, PointChunk.summary_steps, PointChunk.summary_values
        ).where(*inside).order_by(PointChunk.series_id, PointChunk.first_step)
        grouped: dict[int, list[Any]] = {}
        for row in session.execute(query):
            grouped.setdefault(row.series_id, []).append(row)
        rows = [
            (series_id, b"".join(r.aggregates or b"" for r in group), b"".join(r.summary_steps for r in group),
             b"".join(r.summary_values for r in group), all(r.aggregates is not None for r in group))
            for series_id, group in grouped.items()
        ]  # fmt: skip
    tables = {
        series_id: ChunkTable(series_id, np.frombuffer(aggregates or b"", AGGREGATE_DTYPE), {},
                              decode_steps(rep_steps or b""), decode_values(rep_values or b""))
        for series_id, aggregates, rep_steps, rep_values, complete in rows
        if complete
    }  # fmt: skip
    if step_min is not None or step_max is not None:
        # A series with chunks lacking aggregates is read in full by the caller; one with
        # no chunk wholly inside the range gets a table of its cut chunks only.
        without_aggregates = {row[0] for row in rows if not row[4]}
        wanted = [series_id for series_id in series_ids if series_id not in without_aggregates]
        _add_cut_chunks(session, wanted, step_min, step_max, tables)
    return {series_id: table for series_id, table in tables.items() if _ordered(table.chunks)}


def _add_cut_chunks(
    session: Session, series_ids: Sequence[int], step_min: int | None, step_max: int | None,
    tables: dict[int, ChunkTable],
) -> None:  # fmt: skip
    """Merge in the chunks the step range cuts, read in full and clipped (at most one at
    each end of a series whose chunks do not overlap)."""
    cut = []
    if step_min is not None:
        cut.append(sa.and_(PointChunk.first_step < step_min, PointChunk.last_step >= step_min))
    if step_max is not None:
        cut.append(sa.and_(PointChunk.first_step <= step_max, PointChunk.last_step > step_max))
    query = sa.select(PointChunk.series_id, PointChunk.first_step, PointChunk.steps, PointChunk.values).where(
        PointChunk.series_id.in_(series_ids), sa.or_(*cut)
    )
    seen: set[tuple[int, int]] = set()
    extra: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for series_id, first_step, steps, values in session.execute(query):
        if (series_id, first_step) in seen:
            continue  # the one chunk that contains both ends
        seen.add((series_id, first_step))
        steps, values = decode_steps(steps), decode_values(values)
        keep = np.ones(len(steps), dtype=bool)
        if step_min is not None:
            keep &= steps >= step_min
        if step_max is not None:
            keep &= steps <= step_max
        if keep.any():
            extra.setdefault(series_id, []).append((steps[keep], values[keep]))
    for series_id, parts in extra.items():
        table = tables.get(series_id) or ChunkTable(
            series_id, np.zeros(0, AGGREGATE_DTYPE), {}, np.zeros(0, np.int64), np.zeros(0)
        )
        records = [table.chunks] + [aggregate_record(s, v) for s, v in parts]
        rep_steps = [table.rep_steps] + [s[representatives(v)] for s, v in parts]
        rep_values = [table.rep_values] + [v[representatives(v)] for s, v in parts]
        chunks = np.concatenate(records)
        order = np.argsort(chunks["first_step"], kind="stable")
        reps_steps, reps_values = np.concatenate(rep_steps), np.concatenate(rep_values)
        rep_order = np.argsort(reps_steps, kind="stable")
        # Where the clipped chunks land among the others, so their points stay attached: the
        # inverse permutation of `order`, read only at the clipped chunks (a dict over every
        # chunk cost 0.4 ms a series).
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        points = {int(position[len(table.chunks) + k]): part for k, part in enumerate(parts)}
        tables[series_id] = ChunkTable(series_id, chunks[order], points, reps_steps[rep_order], reps_values[rep_order])


def _ordered(chunks: np.ndarray) -> bool:
    """Chunks that do not overlap (a retried write never overlaps, but `_clean` in
    points.py resolves overlaps point by point, which aggregates cannot)."""
    return len(chunks) > 0 and bool(np.all(chunks["first_step"][1:] > chunks["last_step"][:-1]))


def read_chunk_points(session: Session, series_id: int, first_steps: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The full `(steps, values)` of the chunks of `series_id` starting at `first_steps`
    (ascending), in that order."""
    if not len(first_steps):
        return []
    query = (
        sa.select(PointChunk.steps, PointChunk.values)
        .where(PointChunk.series_id == series_id, PointChunk.first_step.in_([int(s) for s in first_steps]))
        .order_by(PointChunk.first_step)
    )
    return [(decode_steps(steps), decode_values(values)) for steps, values in session.execute(query)]
