"""`agg=mean` and the depth profile from chunk aggregates equal the full computation, on
SQLite and PostgreSQL: property tests over random chunkings, budgets, step ranges and
values with NaN and ±Inf, against `downsample(…, "mean", edges)` and
`depth_profile(…, edges)` of every point, with buckets of whole chunks.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from service import store
from service.analysis.chunk_buckets import chunk_edges, mean_from_chunks
from service.analysis.downsample import downsample, must_keep_points
from service.analysis.profile import depth_profile
from service.api.bucket_reads import read_mean_thinned, read_profile
from service.store.aggregates import AGGREGATE_DTYPE, aggregate_record
from tests.service.chunked_runs import store_chunked

LAYERS = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@st.composite
def stored_runs(draw: st.DrawFn) -> dict:
    """Per-layer values over shared steps, cut into chunks of random sizes."""
    n = draw(st.integers(20, 3000))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    regular = draw(st.booleans())
    stride = draw(st.sampled_from([1, 3, 10]))
    steps = np.arange(n, dtype=np.int64) * stride if regular else np.cumsum(rng.integers(1, 5, n)).astype(np.int64)
    values = np.exp(rng.normal(0, 2, size=(n, len(LAYERS))))
    for marker in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=6)):
        values[rng.integers(n), rng.integers(len(LAYERS))] = marker
    cuts = np.unique(rng.integers(1, n, size=draw(st.integers(0, max(1, n // 5)))))
    bounds = np.concatenate(([0], cuts, [n]))
    low, high = int(steps[0]), int(steps[-1])
    step_range = draw(
        st.sampled_from([(None, None), (low + (high - low) // 7, None), (None, high - (high - low) // 5),
                         (low + (high - low) // 3, high - (high - low) // 4)])
    )  # fmt: skip
    return {"steps": steps, "values": values, "bounds": bounds, "max_points": draw(st.integers(1, 400)),
            "step_range": step_range}  # fmt: skip


def _store(session: Session, run: dict) -> str:
    return store_chunked(session, run, LAYERS, newest_first=True)


def _assert_same(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], expected[0])
    # Equal up to the order of additions; NaN and ±Inf in the same places.
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-9, atol=0)


def _tables(session: Session, experiment_id: str, step_range: tuple[int | None, int | None]) -> list[store.ChunkTable]:
    refs = store.find_series(session, experiment_id, "grad_norm")
    tables = store.read_chunk_tables(session, [ref.id for ref in refs], *step_range)
    return [tables[ref.id] for ref in refs]


@PROPERTY
@given(run=stored_runs())
def test_mean_from_aggregates_equals_the_full_mean(session: Session, run: dict) -> None:
    experiment_id = _store(session, run)
    step_min, step_max = step_range = run["step_range"]
    max_points = run["max_points"]
    full = store.read_series(session, experiment_id, "grad_norm", None, step_min, step_max)
    tables = _tables(session, experiment_id, step_range)
    thinned = read_mean_thinned(session, experiment_id, "grad_norm", None, step_min, step_max, max_points)
    assert [s.layer for s in thinned] == LAYERS
    for got, every, table in zip(thinned, full, tables, strict=True):
        assert table.n_points == len(every.steps)
        buckets = max_points - len(must_keep_points(every.steps, every.values)[0])
        # Buckets of whole chunks wherever the chunks outnumber the buckets.
        edges = chunk_edges(table) if len(table.chunks) >= buckets else None
        _assert_same((got.steps, got.values), downsample(every.steps, every.values, max_points, "mean", edges))


@PROPERTY
@given(run=stored_runs())
def test_profile_from_aggregates_equals_the_full_profile(session: Session, run: dict) -> None:
    experiment_id = _store(session, run)
    step_min, step_max = step_range = run["step_range"]
    max_points = run["max_points"]
    full = store.read_series(session, experiment_id, "grad_norm", None, step_min, step_max)
    got = read_profile(session, experiment_id, "grad_norm", step_min, step_max, max_points)
    [table, *_] = _tables(session, experiment_id, step_range)
    if got is None:
        # Only when the chunks do not outnumber the rows, or their steps are uneven.
        even = bool(np.all(np.diff(run["steps"]) == np.diff(run["steps"])[0]))
        assert len(table.chunks) < max_points or not even or table.n_points <= max_points
        return
    expected = depth_profile("grad_norm", full, max_points, chunk_edges(table))
    assert got.layers == expected.layers and got.positions == expected.positions
    assert got.downsampled == expected.downsampled
    np.testing.assert_array_equal(got.steps, expected.steps)
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-9, atol=0)


def test_a_regular_run_decodes_no_chunk(session: Session) -> None:
    """100,000 points in 50-point chunks, thinned to 1,000 by mean: every bucket is whole
    chunks, read from their 40-byte aggregates; not one chunk is decoded."""
    n, flush = 100_000, 50
    steps = np.arange(n, dtype=np.int64)
    values = np.sin(steps / 300.0) + 2
    run = {"steps": steps, "values": np.repeat(values[:, None], len(LAYERS), axis=1),
           "bounds": np.arange(0, n + 1, flush)}  # fmt: skip
    experiment_id = _store(session, run)
    [table, *_] = _tables(session, experiment_id, (None, None))

    def no_reads(t: store.ChunkTable, positions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        raise AssertionError(f"decoded chunks {positions.tolist()}")

    got = mean_from_chunks(table, 1000, no_reads)
    assert got is not None and len(got[0]) <= 1000
    _assert_same(got, downsample(steps, values, 1000, "mean", chunk_edges(table)))
    assert len(table.chunks) == n // flush


def test_aggregate_record_of_a_chunk() -> None:
    record = aggregate_record(np.array([4, 6, 8]), np.array([1.0, np.inf, 2.0]))
    assert record.dtype == AGGREGATE_DTYPE
    assert record.tolist() == [(4, 8, 3, 2, np.inf)]
    assert aggregate_record(np.array([1, 2, 5]), np.array([1.0, 2.0, 3.0]))["stride"][0] == 0
