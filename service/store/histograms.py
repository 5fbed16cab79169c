"""Histograms of gradients and activations: compact, idempotent writes and reads by metric.

One row per (metric, layer) and flush in `histogram_chunks`: the steps, and the step × column
count matrix compressed with zlib (the counts are exact int64; most bins of most rows are
empty, so the matrix compresses about tenfold). The bin edges are evenly spaced and stored as
their count and end points. The primary key `(experiment_id, metric, layer, first_step)`
makes a retried batch a no-op, as for points.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import HistogramChunk as HistogramChunkRow
from service.store.codec import decode_steps, encode_steps
from service.store.dialect import insert_for

COUNT_DTYPE = np.dtype("<i8")
# The columns around the bins, in the order the engine writes them (workers/engine/histograms.py).
SPECIAL_COLUMNS = ("zero", "below", "above", "nonfinite")


@dataclass(frozen=True)
class HistogramChunk:
    """One flush's histograms of one (metric, layer); built by the worker."""

    metric: str  # grad_log10_abs | act_pre | act_out
    layer: str
    position: int  # the order the engine reported its rows in
    steps: np.ndarray  # int64 (S,), ascending
    counts: np.ndarray  # int64 (S, bins + 4): zero, below, the bins, above, non-finite
    edges: np.ndarray  # float64 (bins + 1,), evenly spaced


@dataclass(frozen=True)
class HistogramData:
    """The histograms of one (metric, layer) read back, steps ascending."""

    metric: str
    layer: str
    steps: np.ndarray  # int64 (S,)
    edges: np.ndarray  # float64 (bins + 1,)
    counts: np.ndarray  # int64 (S, bins): the bins [edges[i], edges[i+1])
    special: dict[str, np.ndarray]  # SPECIAL_COLUMNS → int64 (S,)


def histogram_rows(experiment_id: str, chunks: Sequence[HistogramChunk]) -> list[dict[str, Any]]:
    rows = []
    for chunk in chunks:
        steps, counts, edges = np.asarray(chunk.steps), np.asarray(chunk.counts), np.asarray(chunk.edges)
        if not len(steps):
            continue
        bins = len(edges) - 1
        if counts.shape != (len(steps), bins + 4):
            raise ValueError(f"{chunk.metric}/{chunk.layer}: counts have shape {counts.shape}, expected {(len(steps), bins + 4)}")
        if not np.allclose(np.linspace(edges[0], edges[-1], bins + 1), edges, rtol=0, atol=1e-12):
            raise ValueError(f"{chunk.metric}/{chunk.layer}: bin edges must be evenly spaced")
        rows.append({
            "experiment_id": experiment_id,
            "metric": chunk.metric,
            "layer": chunk.layer,
            "first_step": int(steps[0]),
            "last_step": int(steps[-1]),
            "position": chunk.position,
            "n_steps": len(steps),
            "bins": bins,
            "first_edge": float(edges[0]),
            "last_edge": float(edges[-1]),
            "steps": encode_steps(steps),
            "counts": zlib.compress(np.ascontiguousarray(counts, dtype=COUNT_DTYPE).tobytes(), 6),
        })
    return rows


def insert_histogram_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Part of the caller's transaction (store.write_chunks); a row already there is kept."""
    if rows:
        statement = insert_for(session, HistogramChunkRow.__table__).on_conflict_do_nothing(
            index_elements=["experiment_id", "metric", "layer", "first_step"]
        )
        session.execute(statement, rows)


def list_histograms(session: Session, experiment_id: str) -> dict[str, list[str]]:
    """metric → its layers, in the engine's order."""
    query = (
        sa.select(HistogramChunkRow.metric, HistogramChunkRow.layer, sa.func.min(HistogramChunkRow.position))
        .where(HistogramChunkRow.experiment_id == experiment_id)
        .group_by(HistogramChunkRow.metric, HistogramChunkRow.layer)
        .order_by(sa.func.min(HistogramChunkRow.position))
    )
    found: dict[str, list[str]] = {}
    for metric, layer, _ in session.execute(query):
        found.setdefault(metric, []).append(layer)
    return found


def read_histograms(session: Session, experiment_id: str, metric: str, layer: str | None = None) -> list[HistogramData]:
    """Every histogram of `metric` (of one `layer`, when given), layer by layer in the engine's order."""
    query = sa.select(
        HistogramChunkRow.layer,
        HistogramChunkRow.position,
        HistogramChunkRow.n_steps,
        HistogramChunkRow.bins,
        HistogramChunkRow.first_edge,
        HistogramChunkRow.last_edge,
        HistogramChunkRow.steps,
        HistogramChunkRow.counts,
    ).where(HistogramChunkRow.experiment_id == experiment_id, HistogramChunkRow.metric == metric)
    if layer is not None:
        query = query.where(HistogramChunkRow.layer == layer)
    rows = session.execute(query.order_by(HistogramChunkRow.position, HistogramChunkRow.layer, HistogramChunkRow.first_step)).all()
    by_layer: dict[str, list[Any]] = {}
    for row in rows:
        by_layer.setdefault(row.layer, []).append(row)
    found = []
    for name, chunks in by_layer.items():
        first = chunks[0]
        steps = np.concatenate([decode_steps(c.steps) for c in chunks])
        counts = np.concatenate([
            np.frombuffer(zlib.decompress(c.counts), dtype=COUNT_DTYPE).reshape(c.n_steps, c.bins + 4) for c in chunks
        ])
        found.append(HistogramData(
            metric=metric,
            layer=name,
            steps=steps,
            edges=np.linspace(first.first_edge, first.last_edge, first.bins + 1),
            counts=np.ascontiguousarray(counts[:, 2:-2]),
            special={name: np.ascontiguousarray(counts[:, column]) for name, column in zip(SPECIAL_COLUMNS, (0, 1, -2, -1))},
        ))
    return found
