"""Probe points: batched, idempotent writes of chunks, and series reads that touch only
their own chunks.

One `write_chunks` call is one transaction: get-or-create the series rows, one batched
INSERT … ON CONFLICT DO NOTHING of the chunks (primary key
`(series_id, first_step)`, so a retried batch or a redelivered task stores nothing
twice), and the experiment's progress and heartbeat. Each chunk row also carries its
representative points (service/store/summaries.py), which a minmax-thinned read uses
instead of every point.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Experiment, PointChunk, Series, TimestepChunk
from service.store.dialect import insert_for as _insert
from service.store.histograms import HistogramChunk as HistogramChunkRecord, histogram_rows, insert_histogram_rows
from service.store.codec import (
    decode_steps,
    decode_values,
    encode_steps,
    encode_values,
)
from service.store.catalog import GLOBAL_LAYER, find_series
from service.store.records import (
    ExperimentNotFound,
    SeriesChunk,
    SeriesData,
    SeriesRef,
    TimestepChunk as TimestepChunkRecord,
    TimestepData,
)
from service.store.aggregates import aggregate_column
from service.store.summaries import read_representatives, summary_columns

class _SeriesIdCache:
    """(database, experiment) → {(metric, stored layer): series id}, filled after commit.

    Series rows never change once created, so a writer needs to look them up only once
    per run instead of once per batch (a round trip saved on every flush). A stale entry
    (the experiment was deleted, a test database recreated) fails the foreign key, which
    `write_chunks` answers by forgetting the entry and retrying once.
    """

    def __init__(self, max_experiments: int = 256) -> None:
        self._entries: OrderedDict[tuple[str, str], dict[tuple[str, str], int]] = OrderedDict()
        self._max = max_experiments
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> dict[tuple[str, str], int]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return dict(entry) if entry else {}

    def put(self, key: tuple[str, str], ids: dict[tuple[str, str], int]) -> None:
        with self._lock:
            self._entries[key] = dict(ids)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)


_series_id_cache = _SeriesIdCache()


def _series_ids(
    session: Session,
    experiment_id: str,
    chunks: Sequence[SeriesChunk],
    known: dict[tuple[str, str], int],
) -> dict[tuple[str, str], int]:
    """(metric, stored layer) → series id, creating the series rows that are missing."""
    wanted = {(c.metric, c.layer or GLOBAL_LAYER): c.position for c in chunks}
    if all(key in known for key in wanted):
        return known
    query = sa.select(Series.metric, Series.layer, Series.id).where(
        Series.experiment_id == experiment_id
    )
    ids = {(metric, layer): id_ for metric, layer, id_ in session.execute(query)}
    missing = [key for key in wanted if key not in ids]
    if missing:
        rows = [
            {"experiment_id": experiment_id, "metric": m, "layer": layer, "position": wanted[(m, layer)]}
            for m, layer in missing
        ]
        session.execute(
            _insert(session, Series.__table__).on_conflict_do_nothing(
                index_elements=["experiment_id", "metric", "layer"]
            ),
            rows,
        )
        ids = {(metric, layer): id_ for metric, layer, id_ in session.execute(query)}
    return ids


def write_chunks(
    session: Session,
    experiment_id: str,
    series: Sequence[SeriesChunk],
    timesteps: Sequence[TimestepChunkRecord] = (),
    progress_step: int | None = None,
    histograms: Sequence[HistogramChunkRecord] = (),
) -> None:
    """Store probe points in one transaction, idempotently, and commit.

    One call usually holds one flush; a writer that fell behind may pass several flushes
    at once (chunks of the same series with different first steps), which is cheaper.
    Empty chunks are skipped. `progress_step`, when given, also sets the heartbeat of a
    running experiment. Raises ExperimentNotFound when the experiment does not exist.
    """
    series = [c for c in series if len(c.steps)]
    timestep_rows = [_timestep_row(experiment_id, c) for c in timesteps if len(c.steps)]
    rows_of_histograms = histogram_rows(experiment_id, histograms)
    point_rows = [_point_row(c) for c in series]
    cache_key = (str(session.get_bind().url), experiment_id)
    for attempt in (1, 2):
        try:
            _write(session, experiment_id, series, point_rows, timestep_rows, rows_of_histograms, progress_step, cache_key)
            return
        except sa.exc.IntegrityError:
            session.rollback()
            _series_id_cache.forget(cache_key)
            if session.get(Experiment, experiment_id) is None:
                raise ExperimentNotFound(experiment_id) from None
            if attempt == 2:
                raise
        except BaseException:
            session.rollback()
            raise


def _write(
    session: Session,
    experiment_id: str,
    series: Sequence[SeriesChunk],
    point_rows: list[dict[str, Any]],
    timestep_rows: list[dict[str, Any]],
    rows_of_histograms: list[dict[str, Any]],
    progress_step: int | None,
    cache_key: tuple[str, str],
) -> None:
    ids: dict[tuple[str, str], int] = {}
    if session.get_bind().dialect.name == "postgresql":
        # Probe points are telemetry: let this commit return before its WAL reaches the
        # disk. A PostgreSQL crash may lose the last fraction of a second of points (never
        # corrupt anything); the wait for fsync was half the time of a batch.
        session.execute(sa.text("SET LOCAL synchronous_commit = off"))
    if series:
        ids = _series_ids(session, experiment_id, series, _series_id_cache.get(cache_key))
        for chunk, row in zip(series, point_rows, strict=True):
            row["series_id"] = ids[(chunk.metric, chunk.layer or GLOBAL_LAYER)]
        # One INSERT … ON CONFLICT DO NOTHING executed over all rows: a compiled, cached
        # statement that psycopg 3 pipelines in one round trip and sqlite3 runs in C.
        # (A literal multi-row VALUES clause measured 4x slower: SQLAlchemy recompiles it
        # for every batch.)
        session.execute(
            _insert(session, PointChunk.__table__).on_conflict_do_nothing(
                index_elements=["series_id", "first_step"]
            ),
            point_rows,
        )
    if timestep_rows:
        session.execute(
            _insert(session, TimestepChunk.__table__).on_conflict_do_nothing(
                index_elements=["experiment_id", "layer_index", "first_step"]
            ),
            timestep_rows,
        )
    insert_histogram_rows(session, rows_of_histograms)
    if progress_step is not None:
        session.execute(
            sa.update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.status == "running")
            .values(progress_step=progress_step, heartbeat_at=utcnow())
        )
    session.commit()
    if ids:
        _series_id_cache.put(cache_key, ids)


def _point_row(chunk: SeriesChunk) -> dict[str, Any]:
    steps = np.asarray(chunk.steps)
    if steps.shape != np.shape(chunk.values):
        raise ValueError(
            f"{chunk.metric}/{chunk.layer}: steps have shape {steps.shape}, "
            f"values {np.shape(chunk.values)}"
        )
    return {
        "first_step": int(steps[0]),
        "last_step": int(steps[-1]),
        "n_points": len(steps),
        "steps": encode_steps(steps),
        "values": encode_values(chunk.values),
        **summary_columns(steps, np.asarray(chunk.values)),
        **aggregate_column(steps, np.asarray(chunk.values)),
    }


def _timestep_row(experiment_id: str, chunk: TimestepChunkRecord) -> dict[str, Any]:
    steps = np.asarray(chunk.steps)
    timesteps = np.asarray(chunk.timesteps)
    shape = (len(steps), len(timesteps))
    hidden = np.asarray(chunk.hidden_grad_norm)
    if hidden.shape != shape:
        raise ValueError(f"hidden_grad_norm has shape {hidden.shape}, expected {shape}")
    cell = None if chunk.cell_grad_norm is None else np.asarray(chunk.cell_grad_norm)
    if cell is not None and cell.shape != shape:
        raise ValueError(f"cell_grad_norm has shape {cell.shape}, expected {shape}")
    return {
        "experiment_id": experiment_id,
        "layer_index": chunk.layer_index,
        "first_step": int(steps[0]),
        "last_step": int(steps[-1]),
        "n_steps": shape[0],
        "n_timesteps": shape[1],
        "steps": encode_steps(steps),
        "timesteps": encode_steps(timesteps),
        "hidden_grad_norm": encode_values(hidden),  # row-major (S, T')
        "cell_grad_norm": None if cell is None else encode_values(cell),
    }


def read_series(
    session: Session,
    experiment_id: str,
    metric: str,
    layers: Sequence[str | None] | None = None,
    step_min: int | None = None,
    step_max: int | None = None,
    minmax_points: int | None = None,
    found: list[SeriesRef] | None = None,
) -> list[SeriesData]:
    """The series of `metric` (all its layers, or `layers`), ordered input → output.

    Reads only those series' chunks (and, with a step range, only the chunks that overlap
    it); steps come back ascending and unique.

    `minmax_points` is for a caller about to thin the series with
    `downsample(…, minmax_points, "minmax")`: a series with many chunks then comes back as
    its chunks' representative points only (service/store/summaries.py), a subset on which
    that downsampling keeps all its guarantees (global maximum and minimum at their exact
    steps, first and last points, first non-finite points) and draws the same line, read
    from a few bytes per chunk. Other aggregations (`mean`, `lttb`) need every point: leave
    it None for them.

    `found`: those series, when the caller already looked them up (`SeriesCatalog.find`).
    """
    if found is None:
        found = find_series(session, experiment_id, metric, layers)
    if not found:
        return []
    ids = [row.id for row in found]
    points: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if minmax_points is not None:
        points = read_representatives(session, ids, step_min, step_max, minmax_points)
    rest = [series_id for series_id in ids if series_id not in points]
    if rest:
        points |= read_points(session, rest, step_min, step_max)
    session.commit()  # end the read transaction
    return [SeriesData(row.layer, row.position, *points[row.id]) for row in found]


def read_points(
    session: Session, series_ids: Sequence[int], step_min: int | None, step_max: int | None
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """series id → every one of its points in the step range, in one query for all series."""
    # Core columns, not the mapped class's: rows without the ORM's per-row work (a series
    # read of 200 chunks spent more in it than in the query).
    chunks = PointChunk.__table__
    chunk_query = sa.select(chunks.c.series_id, chunks.c.steps, chunks.c["values"]).where(
        chunks.c.series_id.in_(series_ids)
    )
    if step_min is not None:
        chunk_query = chunk_query.where(chunks.c.last_step >= step_min)
    if step_max is not None:
        chunk_query = chunk_query.where(chunks.c.first_step <= step_max)
    chunk_query = chunk_query.order_by(chunks.c.series_id, chunks.c.first_step)
    parts: dict[int, tuple[list[bytes], list[bytes]]] = {series_id: ([], []) for series_id in series_ids}
    for series_id, steps, values in session.execute(chunk_query):
        step_parts, value_parts = parts[series_id]
        step_parts.append(steps)
        value_parts.append(values)
    result = {}
    for series_id, (step_parts, value_parts) in parts.items():
        steps = decode_steps(b"".join(step_parts))
        values = decode_values(b"".join(value_parts))
        result[series_id] = _clean(steps, values, step_min, step_max)
    return result


def _clean(
    steps: np.ndarray, values: np.ndarray, step_min: int | None, step_max: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Restrict to [step_min, step_max]; sort and drop repeated steps (keeping the first
    stored) should chunks ever overlap."""
    if step_min is not None or step_max is not None:
        keep = np.ones(len(steps), dtype=bool)
        if step_min is not None:
            keep &= steps >= step_min
        if step_max is not None:
            keep &= steps <= step_max
        steps, values = steps[keep], values[keep]
    if len(steps) > 1 and not np.all(steps[1:] > steps[:-1]):
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
        first = np.concatenate(([True], steps[1:] != steps[:-1]))
        steps, values = steps[first], values[first]
    return steps, values


# What timestep_data() decodes.
TIMESTEP_COLUMNS = (
    TimestepChunk.layer_index,
    TimestepChunk.n_timesteps,
    TimestepChunk.steps,
    TimestepChunk.timesteps,
    TimestepChunk.hidden_grad_norm,
    TimestepChunk.cell_grad_norm,
)


def read_timesteps(
    session: Session, experiment_id: str, layer_index: int | None = None, step: int | None = None
) -> list[TimestepData]:
    """Gradient norms through time per recurrent layer (ordered by layer index).

    With `step`, only that training step's row (an empty matrix when it was not recorded).
    """
    query = sa.select(*TIMESTEP_COLUMNS).where(TimestepChunk.experiment_id == experiment_id)
    if layer_index is not None:
        query = query.where(TimestepChunk.layer_index == layer_index)
    if step is not None:
        query = query.where(TimestepChunk.first_step <= step, TimestepChunk.last_step >= step)
    rows = session.execute(query.order_by(TimestepChunk.layer_index, TimestepChunk.first_step)).all()
    session.commit()
    return timestep_data(rows, step)


def timestep_data(rows: Sequence[Any], step: int | None = None) -> list[TimestepData]:
    """Timestep chunk rows (layer_index, n_timesteps, steps, timesteps, hidden_grad_norm,
    cell_grad_norm; ordered by layer, then first step) decoded into one matrix per layer;
    with `step`, only that step's row."""
    by_layer: dict[int, list[Any]] = {}
    for row in rows:
        by_layer.setdefault(row.layer_index, []).append(row)
    result = []
    for index, chunks in by_layer.items():
        # Every chunk of a run records the same timesteps; the first chunk names them.
        timesteps = decode_steps(chunks[0].timesteps)
        width = len(timesteps)
        chunks = [c for c in chunks if c.n_timesteps == width]
        steps = decode_steps(b"".join(c.steps for c in chunks))
        hidden = decode_values(b"".join(c.hidden_grad_norm for c in chunks)).reshape(-1, width)
        has_cell = all(c.cell_grad_norm is not None for c in chunks)
        cell = (
            decode_values(b"".join(c.cell_grad_norm for c in chunks)).reshape(-1, width)
            if has_cell
            else None
        )
        if step is not None:
            keep = steps == step
        else:
            keep = np.concatenate(([True], steps[1:] > steps[:-1])) if len(steps) else steps > 0
        if not np.all(keep):
            steps, hidden = steps[keep], hidden[keep]
            cell = None if cell is None else cell[keep]
        result.append(TimestepData(index, steps, timesteps, hidden, cell))
    return result
