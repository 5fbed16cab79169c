"""Reads served from chunk aggregates: `agg=mean` series and the depth profile.

Glue between the store's chunk tables (service/store/aggregates.py) and the bucket
arithmetic (service/analysis/chunk_buckets.py): a series whose chunks carry aggregates and
do not overlap, with at least as many chunks as buckets, is answered from them in buckets
of whole chunks; any other series is read point by point, as before. Either way the
answer is what `downsample(…, "mean", edges)` or `depth_profile(…, edges)` give over every
point (service/analysis/chunk_buckets.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy.orm import Session

from service import store
from service.analysis.chunk_buckets import ChunkReader, mean_from_chunks, profile_rows_from_chunks
from service.analysis.downsample import downsample
from service.analysis.profile import DepthProfile
from service.store.records import SeriesData


def _reader(session: Session) -> ChunkReader:
    def read(table: store.ChunkTable, positions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        return store.read_chunk_points(session, table.series_id, table.chunks["first_step"][positions].tolist())

    return read


def read_mean_thinned(
    session: Session, experiment_id: str, metric: str, layers: Sequence[str | None] | None,
    step_min: int | None, step_max: int | None, max_points: int,
) -> list[SeriesData]:  # fmt: skip
    """The series of `metric` (all layers, or `layers`) thinned by `agg=mean`."""
    found = store.find_series(session, experiment_id, metric, layers)
    tables = store.read_chunk_tables(session, [ref.id for ref in found], step_min, step_max)
    read = _reader(session)
    thinned: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for ref in found:
        table = tables.get(ref.id)
        result = None if table is None else mean_from_chunks(table, max_points, read)
        if result is not None:
            thinned[ref.id] = result
    return thinned_in_order(session, experiment_id, metric, found, thinned, step_min, step_max, max_points, "mean")


def thinned_in_order(
    session: Session, experiment_id: str, metric: str, found: Sequence, thinned: dict[int, tuple[np.ndarray, np.ndarray]],
    step_min: int | None, step_max: int | None, max_points: int, agg: str,
) -> list[SeriesData]:
    """The series of `found` in their order: those in `thinned` (by series id) as they are, the
    rest read in full and thinned by `downsample(…, agg)`; ends the read transaction."""
    rest = [ref.layer for ref in found if ref.id not in thinned]
    if rest:
        for data in store.read_series(session, experiment_id, metric, rest, step_min, step_max):
            ref = next(r for r in found if r.layer == data.layer)
            thinned[ref.id] = downsample(data.steps, data.values, max_points, agg)
    session.commit()  # end the read transaction
    return [SeriesData(ref.layer, ref.position, *thinned[ref.id]) for ref in found]


def read_profile(
    session: Session, experiment_id: str, metric: str, step_min: int | None, step_max: int | None, max_points: int
) -> DepthProfile | None:
    """The depth profile of `metric` from chunk aggregates, or None when its layers do not
    share one chunk layout or fit within `max_points` rows (the caller aligns points)."""
    found = [ref for ref in store.find_series(session, experiment_id, metric) if ref.layer is not None]
    found.sort(key=lambda ref: ref.position)
    tables = store.read_chunk_tables(session, [ref.id for ref in found], step_min, step_max)
    if not found or any(ref.id not in tables for ref in found):
        return None
    rows = profile_rows_from_chunks([tables[ref.id] for ref in found], max_points)
    session.commit()
    if rows is None:
        return None
    steps, values = rows
    return DepthProfile(
        metric=metric,
        layers=[ref.layer for ref in found if ref.layer is not None],
        positions=[ref.position for ref in found],
        steps=steps,
        values=values,
        downsampled=True,
    )
