"""`read_whole_series` returns exactly what `read_series` does, metric by metric, on SQLite
and PostgreSQL: property tests over random chunkings written in any order, even and uneven
steps, NaN and ±Inf, chunks that overlap and chunks without aggregates; and the summary
built from it is the summary built from `read_series`.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from service import store
from service.analysis.diagnosis import DIAGNOSIS_METRICS, diagnose
from service.analysis.diagnosis_records import DiagnosisInput
from service.config import DiagnosisThresholds
from service.db.models import PointChunk
from service.schemas.jsoncodec import dumps

LAYERS = ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.2.weight"]
PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@st.composite
def stored_runs(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 2000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spacing = draw(st.sampled_from(["even", "uneven", "mixed"]))
    stride = draw(st.sampled_from([1, 7]))
    if spacing == "even":
        steps = np.arange(n, dtype=np.int64) * stride + 3
    else:
        gaps = rng.integers(1, 4, n) if spacing == "uneven" else np.where(rng.random(n) < 0.02, 5, stride)
        steps = np.cumsum(gaps).astype(np.int64)
    values = np.exp(rng.normal(0, 2, size=(n, len(LAYERS) + 1)))
    for marker in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=8)):
        values[rng.integers(n), rng.integers(len(LAYERS) + 1)] = marker
    cuts = np.unique(rng.integers(1, max(2, n), size=draw(st.integers(0, max(1, n // 4)))))
    bounds = np.unique(np.concatenate(([0], cuts[cuts < n], [n])))
    return {"steps": steps, "values": values, "bounds": bounds, "overlap": draw(st.booleans()),
            "unaggregated": draw(st.booleans()), "seed": draw(st.integers(0, 1000))}  # fmt: skip


def _store(session: Session, run: dict) -> str:
    record = store.create_experiment(session, "e", [], {"model": {"type": "mlp"}, "training": {"steps": 10}}, "cpu")
    store.claim_experiment(session, record.id, "w")
    steps, values, bounds = run["steps"], run["values"], run["bounds"]
    chunks = [
        store.SeriesChunk(metric, layer, position, steps[a:b], values[a:b, column])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        for metric, layer, position, column in [
            *(("grad_mean_abs", layer, i, i) for i, layer in enumerate(LAYERS)),
            ("grad_norm_total", None, -1, len(LAYERS)),
        ]
    ]
    np.random.default_rng(run["seed"]).shuffle(chunks)  # any order of writes
    if run["overlap"] and len(steps) > 2:
        # A chunk starting inside another one: read_points resolves it point by point.
        chunks.append(store.SeriesChunk("grad_mean_abs", LAYERS[0], 0, steps[1:3] , np.array([-1.0, -2.0])))
    store.write_chunks(session, record.id, chunks)
    if run["unaggregated"]:  # as a chunk written before migration 0008 and not backfilled
        session.execute(sa.update(PointChunk).where(PointChunk.first_step == int(steps[0])).values(aggregates=None))
        session.commit()
    return record.id


def _assert_same_series(got: list[store.SeriesData], expected: list[store.SeriesData]) -> None:
    assert [(s.layer, s.position) for s in got] == [(s.layer, s.position) for s in expected]
    for one, other in zip(got, expected, strict=True):
        assert one.steps.dtype == other.steps.dtype and one.values.dtype == other.values.dtype
        np.testing.assert_array_equal(one.steps, other.steps)
        np.testing.assert_array_equal(one.values, other.values)  # NaN where NaN, bit for bit otherwise


@PROPERTY
@given(run=stored_runs())
def test_whole_series_equal_read_series(session: Session, run: dict) -> None:
    experiment_id = _store(session, run)
    got = store.read_whole_series(session, experiment_id, ["grad_mean_abs", "grad_norm_total", "loss"])
    assert sorted(got) == ["grad_mean_abs", "grad_norm_total"]
    for metric, series in got.items():
        _assert_same_series(series, store.read_series(session, experiment_id, metric))


@PROPERTY
@given(run=stored_runs())
def test_the_summary_from_whole_series_is_the_summary_from_read_series(session: Session, run: dict) -> None:
    experiment_id = _store(session, run)
    spec = {"model": {"type": "mlp"}, "clipping": {"mode": "none"}}
    thresholds = DiagnosisThresholds()
    available = store.list_metrics(session, experiment_id)
    each = {metric: store.read_series(session, experiment_id, metric) for metric in DIAGNOSIS_METRICS if metric in available}
    whole = store.read_whole_series(session, experiment_id, DIAGNOSIS_METRICS)
    expected = diagnose(DiagnosisInput(spec=spec, series=each), thresholds, 100)
    got = diagnose(DiagnosisInput(spec=spec, series=whole), thresholds, 100)
    assert dumps(got.__dict__) == dumps(expected.__dict__)


def test_even_chunks_are_read_without_their_steps(session: Session) -> None:
    """An even run's steps come from its aggregates: blanking the stored steps of every
    chunk changes nothing the PostgreSQL read returns (SQLite reads them, as before)."""
    steps = np.arange(0, 3000, 3, dtype=np.int64)
    run = {"steps": steps, "values": np.random.default_rng(1).random((len(steps), len(LAYERS) + 1)),
           "bounds": np.arange(0, len(steps) + 1, 50), "overlap": False, "unaggregated": False, "seed": 0}  # fmt: skip
    experiment_id = _store(session, run)
    before = store.read_whole_series(session, experiment_id, ["grad_mean_abs"])
    session.execute(sa.update(PointChunk).values(steps=b""))
    session.commit()
    after = store.read_whole_series(session, experiment_id, ["grad_mean_abs"])
    if session.get_bind().dialect.name == "postgresql":
        _assert_same_series(after["grad_mean_abs"], before["grad_mean_abs"])
    for one in before["grad_mean_abs"]:
        np.testing.assert_array_equal(one.steps, steps)
