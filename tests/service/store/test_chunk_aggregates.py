"""`agg=mean` and the depth profile from chunk aggregates equal the full computation, on
SQLite and PostgreSQL: property tests over random chunkings, budgets, step ranges and
values with NaN and ±Inf, against `downsample(…, "mean")` and `depth_profile` of every point.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from service import store
from service.analysis.downsample import downsample
from service.analysis.profile import depth_profile
from service.api.bucket_reads import read_mean_thinned, read_profile
from service.store.aggregates import AGGREGATE_DTYPE, aggregate_record

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
    record = store.create_experiment(session, "e", [], {"training": {"steps": 10}}, "cpu")
    store.claim_experiment(session, record.id, "w")
    steps, values, bounds = run["steps"], run["values"], run["bounds"]
    chunks = [
        store.SeriesChunk("grad_norm", layer, position, steps[a:b], values[a:b, position])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        for position, layer in enumerate(LAYERS)
    ]
    store.write_chunks(session, record.id, chunks[::-1])  # any order of writes
    return record.id


def _assert_same(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], expected[0])
    # Equal up to the order of additions; NaN and ±Inf in the same places.
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-9, atol=0)


@PROPERTY
@given(run=stored_runs())
def test_mean_from_aggregates_equals_the_full_mean(session: Session, run: dict) -> None:
    experiment_id = _store(session, run)
    step_min, step_max = run["step_range"]
    full = store.read_series(session, experiment_id, "grad_norm", None, step_min, step_max)
    thinned = read_mean_thinned(session, experiment_id, "grad_norm", None, step_min, step_max, run["max_points"])
    assert [s.layer for s in thinned] == LAYERS
    for got, every in zip(thinned, full, strict=True):
        _assert_same((got.steps, got.values), downsample(every.steps, every.values, run["max_points"], "mean"))


@PROPERTY
@given(run=stored_runs())
def test_profile_from_aggregates_equals_the_full_profile(session: Session, run: dict) -> None:
    experiment_id = _store(session, run)
    step_min, step_max = run["step_range"]
    full = store.read_series(session, experiment_id, "grad_norm", None, step_min, step_max)
    expected = depth_profile("grad_norm", full, run["max_points"])
    got = read_profile(session, experiment_id, "grad_norm", step_min, step_max, run["max_points"])
    if got is None:
        # Only when nothing needs thinning, or the chunks' steps are uneven.
        assert not expected.downsampled or not np.all(np.diff(run["steps"]) == np.diff(run["steps"])[0])
        return
    assert got.layers == expected.layers and got.positions == expected.positions
    assert got.downsampled == expected.downsampled
    np.testing.assert_array_equal(got.steps, expected.steps)
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-9, atol=0)


def test_a_regular_run_decodes_only_the_chunks_bucket_edges_cut(session: Session) -> None:
    """100,000 points in 50-point chunks, thinned to 200: at most one chunk per bucket edge
    is read in full, the rest come from their 40-byte aggregates."""
    n, flush = 100_000, 50
    steps = np.arange(n, dtype=np.int64)
    values = np.sin(steps / 300.0) + 2
    run = {"steps": steps, "values": np.repeat(values[:, None], len(LAYERS), axis=1),
           "bounds": np.arange(0, n + 1, flush)}  # fmt: skip
    experiment_id = _store(session, run)
    [ref] = store.find_series(session, experiment_id, "grad_norm", [LAYERS[0]])
    table = store.read_chunk_tables(session, [ref.id], None, None)[ref.id]
    decoded: list[int] = []

    def counting_reader(t: store.ChunkTable, positions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        decoded.extend(positions.tolist())
        return store.read_chunk_points(session, t.series_id, t.chunks["first_step"][positions].tolist())

    from service.analysis.chunk_buckets import mean_from_chunks

    got = mean_from_chunks(table, 200, counting_reader)
    assert got is not None
    _assert_same(got, downsample(steps, values, 200, "mean"))
    assert len(table.chunks) == n // flush
    assert len(decoded) <= 200  # of 2,000 chunks


def test_aggregate_record_of_a_chunk() -> None:
    record = aggregate_record(np.array([4, 6, 8]), np.array([1.0, np.inf, 2.0]))
    assert record.dtype == AGGREGATE_DTYPE
    assert record.tolist() == [(4, 8, 3, 2, np.inf)]
    assert aggregate_record(np.array([1, 2, 5]), np.array([1.0, 2.0, 3.0]))["stride"][0] == 0
