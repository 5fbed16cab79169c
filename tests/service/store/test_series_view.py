"""Minmax-thinned reads from each chunk's representative points, on SQLite and PostgreSQL.

Whatever the store returns for `minmax_points`, `downsample(…, "minmax")` over it must keep
the guarantees it keeps over the whole series: the global maximum and minimum at their
exact steps, the first and last points, the first NaN/+Inf/-Inf and the finite extremes.
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.orm import Session

from service import store
from service.analysis.downsample import downsample
from service.store.summaries import representatives

LAYERS = ["layers.0.weight", "layers.1.weight"]
FLUSH = 50


@pytest.fixture
def running(session: Session) -> store.ExperimentRecord:
    record = store.create_experiment(session, "e", [], {"training": {"steps": 4000}}, "cpu")
    return store.claim_experiment(session, record.id, "w")


def _values(n_steps: int, seed: int) -> np.ndarray:
    """(n_steps, 2): a random walk per layer; layer 1 has a spike, NaN and ±Inf."""
    rng = np.random.default_rng(seed)
    values = np.exp(np.cumsum(rng.normal(0, 0.05, size=(n_steps, 2)), axis=0))
    values[1337, 0] = 1e6  # the global maximum of layer 0
    values[[1500, 1520, 1530], 1] = [np.nan, np.inf, -np.inf]  # one chunk: [1500, 1549]
    values[2600, 1] = np.nan
    values[311, 1] = 1e-9  # the finite minimum of layer 1
    return values


def _write(session: Session, experiment_id: str, values: np.ndarray, flush: int = FLUSH) -> None:
    steps = np.arange(len(values), dtype=np.int64)
    chunks = [
        store.SeriesChunk("grad_norm", layer, position, steps[start : start + flush], values[start : start + flush, position])
        for start in range(0, len(values), flush)
        for position, layer in enumerate(LAYERS)
    ]
    store.write_chunks(session, experiment_id, chunks, [])


def _guaranteed(steps: np.ndarray, values: np.ndarray) -> dict[int, float]:
    """step → value of every point minmax thinning promises to keep (downsample.py)."""
    key = np.where(np.isnan(values), np.inf, values)
    chosen = [0, len(values) - 1, int(np.argmax(key)), int(np.argmin(key))]
    for mask in (np.isnan(values), values == np.inf, values == -np.inf):
        chosen += [int(i) for i in np.flatnonzero(mask)[:1]]
    finite = np.flatnonzero(np.isfinite(values))
    if len(finite):
        chosen += [int(finite[np.argmax(values[finite])]), int(finite[np.argmin(values[finite])])]
    return {int(steps[i]): float(values[i]) for i in chosen}


def _assert_keeps_guarantees(full: store.SeriesData, view: store.SeriesData, max_points: int) -> None:
    thin_steps, thin_values = downsample(view.steps, view.values, max_points, "minmax")
    assert len(thin_steps) <= max_points
    assert np.all(thin_steps[1:] > thin_steps[:-1])
    kept = dict(zip(thin_steps.tolist(), thin_values.tolist(), strict=True))
    for step, value in _guaranteed(full.steps, full.values).items():
        assert step in kept, f"step {step} ({value}) was dropped"
        np.testing.assert_equal(kept[step], value)
    # The same promise as thinning every point gives.
    full_thin_steps, _ = downsample(full.steps, full.values, max_points, "minmax")
    assert set(_guaranteed(full.steps, full.values)) <= set(full_thin_steps.tolist())


@pytest.mark.parametrize("step_range", [(None, None), (123, 3876), (1525, None), (None, 1337)])
def test_thinned_read_keeps_every_guarantee(
    session: Session, running: store.ExperimentRecord, step_range: tuple[int | None, int | None]
) -> None:
    _write(session, running.id, _values(4000, seed=1))
    step_min, step_max = step_range
    full = store.read_series(session, running.id, "grad_norm", None, step_min, step_max)
    # At least 27 chunks in every range, each with at least 2 representatives (first, last).
    view = store.read_series(session, running.id, "grad_norm", None, step_min, step_max, minmax_points=50)
    assert [v.layer for v in view] == LAYERS and [v.position for v in view] == [0, 1]
    for full_series, view_series in zip(full, view, strict=True):
        # Read from the representatives: a few points per chunk, all of them real points.
        assert 50 < len(view_series.steps) <= 9 * (len(full_series.steps) // FLUSH + 2)
        assert len(view_series.steps) < len(full_series.steps) // 5
        rows = np.searchsorted(full_series.steps, view_series.steps)
        np.testing.assert_array_equal(full_series.steps[rows], view_series.steps)
        np.testing.assert_array_equal(full_series.values[rows], view_series.values)
        # Including the cut chunks' points inside the range, and nothing outside it.
        assert view_series.steps[0] == full_series.steps[0] and view_series.steps[-1] == full_series.steps[-1]
        _assert_keeps_guarantees(full_series, view_series, 50)


def test_cut_chunk_keeps_its_extreme_inside_the_range(session: Session, running: store.ExperimentRecord) -> None:
    values = np.ones((4000, 2))
    values[110, :] = 1e9  # in chunk [100, 149] but outside the range
    values[125, :] = 1e6  # the same chunk, inside the range: the range's maximum
    values[3890, :] = -5.0  # in the last cut chunk [3850, 3899], inside the range
    values[3895, :] = -1e9  # outside
    _write(session, running.id, values)
    [view] = store.read_series(session, running.id, "grad_norm", [LAYERS[0]], 123, 3890, minmax_points=40)
    assert view.steps[0] == 123 and view.steps[-1] == 3890
    thin_steps, thin_values = downsample(view.steps, view.values, 40, "minmax")
    assert thin_values.max() == 1e6 and thin_steps[np.argmax(thin_values)] == 125
    assert thin_values.min() == -5.0 and thin_steps[np.argmin(thin_values)] == 3890


def test_few_chunks_are_read_in_full(session: Session, running: store.ExperimentRecord) -> None:
    _write(session, running.id, _values(4000, seed=2))
    # 80 chunks hold at most 320 finite representatives: with 400 points to fill, every
    # point is worth reading.
    full = store.read_series(session, running.id, "grad_norm", [LAYERS[0]])
    view = store.read_series(session, running.id, "grad_norm", [LAYERS[0]], minmax_points=400)
    np.testing.assert_array_equal(view[0].steps, full[0].steps)
    # A narrow range: two cut chunks and one inside.
    narrow = store.read_series(session, running.id, "grad_norm", [LAYERS[0]], 1010, 1120, minmax_points=20)
    np.testing.assert_array_equal(narrow[0].steps, np.arange(1010, 1121))


def test_overlapping_chunks_fall_back_to_the_full_read(session: Session, running: store.ExperimentRecord) -> None:
    _write(session, running.id, _values(4000, seed=3))
    steps = np.arange(1010, 1030, dtype=np.int64)  # inside chunks [1000, 1049], stored later
    store.write_chunks(session, running.id, [store.SeriesChunk("grad_norm", LAYERS[0], 0, steps, np.full(20, 1e12))], [])
    full = store.read_series(session, running.id, "grad_norm", [LAYERS[0]])
    view = store.read_series(session, running.id, "grad_norm", [LAYERS[0]], minmax_points=100)
    np.testing.assert_array_equal(view[0].steps, full[0].steps)  # deduplicated the same way
    np.testing.assert_array_equal(view[0].values, full[0].values)


def test_representatives_agree_with_downsample() -> None:
    """Over many random series, thinning the concatenated representatives of 50-point
    chunks keeps exactly the points that thinning the whole series promises."""
    rng = np.random.default_rng(0)
    specials = np.array([np.nan, np.inf, -np.inf])
    checked = 0
    for trial in range(200):
        n = int(rng.integers(60, 3000))
        values = rng.normal(size=n).round(1)  # rounded: ties between chunks and within them
        if trial % 2:
            hits = rng.integers(0, n, int(rng.integers(1, 6)))
            values[hits] = rng.choice(specials, len(hits))
        if trial % 7 == 0:
            values[:] = np.nan
        steps = np.arange(n, dtype=np.int64) * 3
        parts = [np.arange(start, min(start + FLUSH, n)) for start in range(0, n, FLUSH)]
        index = np.concatenate([part[representatives(values[part])] for part in parts])
        view = store.SeriesData(None, -1, steps[index], values[index])
        full = store.SeriesData(None, -1, steps, values)
        # Fewer points than the representatives, so that every trial thins something; at
        # least 7, the budget that holds every guaranteed point (downsample.MIN_POINTS_NONFINITE).
        max_points = int(rng.integers(7, min(200, len(index))))
        if len(index) > max_points:
            _assert_keeps_guarantees(full, view, max_points)
            checked += 1
    assert checked == 200, f"only {checked} of 200 trials thinned anything"
