"""`agg=lttb` from chunk representatives (MinMaxLTTB), on SQLite and PostgreSQL: property
tests over random chunkings, budgets, step ranges and values with NaN and ±Inf. Above four
representatives per requested point the answer is LTTB over each chunk's representatives
computed from every point, keeps every must-keep point of the full series, and returns
only recorded points; below, it is exact LTTB over every point.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from service import store
from service.analysis.downsample import downsample, must_keep_points
from service.api.lttb_reads import PRESELECTION_RATIO, read_lttb_thinned
from service.store.summaries import representatives
from tests.service.chunked_runs import store_chunked

LAYERS = ["layers.0.weight", "layers.1.weight"]
PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@st.composite
def stored_runs(draw: st.DrawFn) -> dict:
    n = draw(st.integers(10, 4000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    steps = np.cumsum(rng.integers(1, 3, n)).astype(np.int64) if draw(st.booleans()) else np.arange(n, dtype=np.int64)
    values = np.exp(np.cumsum(rng.normal(0, 0.1, size=(n, len(LAYERS))), axis=0))
    for marker in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=8)):
        start = rng.integers(n)
        values[start : start + rng.integers(1, 20), rng.integers(len(LAYERS))] = marker
    flush = draw(st.sampled_from([1, 2, 5, 50]))
    bounds = np.unique(np.concatenate((np.arange(0, n, flush), [n])))
    low, high = int(steps[0]), int(steps[-1])
    step_range = draw(st.sampled_from([(None, None), (low + (high - low) // 5, high - (high - low) // 6)]))
    return {"steps": steps, "values": values, "bounds": bounds, "max_points": draw(st.integers(2, 300)),
            "step_range": step_range}  # fmt: skip


def _store(session: Session, run: dict) -> str:
    return store_chunked(session, run, LAYERS)


def _preselection(steps: np.ndarray, values: np.ndarray, bounds: np.ndarray, step_range: tuple) -> tuple:
    """Each chunk's representatives, clipped to the step range, from every point."""
    step_min, step_max = step_range
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        keep = np.ones(b - a, dtype=bool)
        if step_min is not None:
            keep &= steps[a:b] >= step_min
        if step_max is not None:
            keep &= steps[a:b] <= step_max
        chunk = np.arange(a, b)[keep]
        parts.append(chunk[representatives(values[chunk])])
    index = np.concatenate(parts)
    return steps[index], values[index]


@PROPERTY
@given(run=stored_runs())
def test_lttb_from_representatives(session: Session, run: dict) -> None:
    experiment_id = _store(session, run)
    step_min, step_max = run["step_range"]
    max_points = run["max_points"]
    full = store.read_series(session, experiment_id, "grad_norm", None, step_min, step_max)
    got = read_lttb_thinned(session, experiment_id, "grad_norm", None, step_min, step_max, max_points)
    assert [s.layer for s in got] == LAYERS
    for position, (one, every) in enumerate(zip(got, full, strict=True)):
        pre_steps, pre_values = _preselection(run["steps"], run["values"][:, position], run["bounds"], run["step_range"])
        if len(pre_steps) > PRESELECTION_RATIO * max_points:
            expected = downsample(pre_steps, pre_values, max_points, "lttb")
        else:
            expected = downsample(every.steps, every.values, max_points, "lttb")
        np.testing.assert_array_equal(one.steps, expected[0])
        np.testing.assert_array_equal(one.values, expected[1])
        # The guarantees, whichever way it came: recorded points only, extremes kept.
        assert len(one.steps) <= max_points
        at = np.searchsorted(every.steps, one.steps)
        np.testing.assert_array_equal(every.steps[at], one.steps)
        np.testing.assert_array_equal(every.values[at], one.values)
        if max_points >= 7:
            kept_steps, _ = must_keep_points(every.steps, every.values)
            assert set(kept_steps.tolist()) <= set(one.steps.tolist())


def test_a_long_run_is_thinned_from_its_representatives(session: Session) -> None:
    """100,000 points in 50-point chunks, 1,000 asked: LTTB runs on about 8,000
    representatives, and the one spike and the global minimum are kept at their steps."""
    n = 100_000
    steps = np.arange(n, dtype=np.int64)
    values = np.sin(steps / 900.0) + 2 + np.random.default_rng(3).normal(0, 0.01, n)
    values[71_234] = 50.0
    run = {"steps": steps, "values": np.repeat(values[:, None], len(LAYERS), axis=1),
           "bounds": np.arange(0, n + 1, 50)}  # fmt: skip
    experiment_id = _store(session, run)
    [one, _] = read_lttb_thinned(session, experiment_id, "grad_norm", None, None, None, 1000)
    pre_steps, pre_values = _preselection(steps, values, run["bounds"], (None, None))
    assert len(pre_steps) > PRESELECTION_RATIO * 1000
    np.testing.assert_array_equal(one.steps, downsample(pre_steps, pre_values, 1000, "lttb")[0])
    assert 71_234 in one.steps.tolist() and int(np.argmin(values)) in one.steps.tolist()
    assert 990 <= len(one.steps) <= 1000  # LTTB's choices and the kept extremes may coincide
