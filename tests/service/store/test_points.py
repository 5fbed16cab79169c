"""Probe points: chunked, idempotent writes and series reads, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service import store

LAYERS = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]


@pytest.fixture
def running(session: Session) -> store.ExperimentRecord:
    record = store.create_experiment(session, "e", [], {"training": {"steps": 100}}, "cpu")
    return store.claim_experiment(session, record.id, "w")


def _flush(start: int, count: int, scale: float = 1.0) -> list[store.SeriesChunk]:
    steps = np.arange(start, start + count, dtype=np.int64)
    chunks = [store.SeriesChunk("loss", None, -1, steps, 1.0 / (1 + steps))]
    # Written output → input, to check that reads order by position, not insertion.
    for position in reversed(range(len(LAYERS))):
        values = scale * (position + 1) * steps.astype(np.float64)
        chunks.append(store.SeriesChunk("grad_norm", LAYERS[position], position, steps, values))
    return chunks


def _count(session: Session, table: str) -> int:
    return session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_round_trip_in_layer_order(session: Session, running: store.ExperimentRecord) -> None:
    store.write_chunks(session, running.id, _flush(0, 50), [], progress_step=49)
    store.write_chunks(session, running.id, _flush(50, 50), [], progress_step=99)
    data = store.read_series(session, running.id, "grad_norm", None, None, None)
    assert [d.layer for d in data] == LAYERS
    assert [d.position for d in data] == [0, 1, 2]
    np.testing.assert_array_equal(data[2].steps, np.arange(100))
    np.testing.assert_array_equal(data[2].values, 3.0 * np.arange(100))
    assert data[0].steps.dtype == np.int64 and data[0].values.dtype == np.float64
    loss = store.read_series(session, running.id, "loss", None, None, None)
    assert len(loss) == 1 and loss[0].layer is None and loss[0].position == -1
    assert store.get_experiment(session, running.id).progress_step == 99
    assert store.list_metrics(session, running.id) == {"grad_norm": LAYERS, "loss": [None]}


def test_same_chunk_twice_is_stored_once(session: Session, running: store.ExperimentRecord) -> None:
    store.write_chunks(session, running.id, _flush(0, 10), [], progress_step=9)
    store.write_chunks(session, running.id, _flush(0, 10, scale=5.0), [], progress_step=9)  # retried
    assert _count(session, "point_chunks") == 4
    assert _count(session, "series") == 4
    data = store.read_series(session, running.id, "grad_norm", ["layers.0.weight"], None, None)
    assert len(data[0].steps) == 10
    np.testing.assert_array_equal(data[0].values, np.arange(10.0))  # the first write wins


def test_overlapping_chunks_are_deduplicated_on_read(session: Session, running: store.ExperimentRecord) -> None:
    store.write_chunks(session, running.id, _flush(0, 10), [])
    store.write_chunks(session, running.id, _flush(5, 10), [])  # steps 5..9 twice
    data = store.read_series(session, running.id, "loss", None, None, None)[0]
    np.testing.assert_array_equal(data.steps, np.arange(15))


def test_layer_and_step_range(session: Session, running: store.ExperimentRecord) -> None:
    for start in range(0, 100, 10):
        store.write_chunks(session, running.id, _flush(start, 10), [])
    data = store.read_series(session, running.id, "grad_norm", ["layers.2.weight", "layers.0.weight"], 25, 41)
    assert [d.layer for d in data] == ["layers.0.weight", "layers.2.weight"]
    np.testing.assert_array_equal(data[0].steps, np.arange(25, 42))
    assert store.read_series(session, running.id, "nope", None, None, None) == []
    empty = store.read_series(session, running.id, "loss", None, 500, None)
    assert len(empty) == 1 and len(empty[0].steps) == 0


def test_non_finite_values_survive(session: Session, running: store.ExperimentRecord) -> None:
    values = np.array([1.0, np.nan, np.inf, -np.inf])
    store.write_chunks(session, running.id, [store.SeriesChunk("loss", None, -1, np.arange(4), values)], [])
    data = store.read_series(session, running.id, "loss", None, None, None)[0]
    np.testing.assert_array_equal(data.values, values)


def test_several_flushes_in_one_call(session: Session, running: store.ExperimentRecord) -> None:
    store.write_chunks(session, running.id, _flush(0, 5) + _flush(5, 5) + [], [], progress_step=9)
    assert _count(session, "point_chunks") == 8
    assert len(store.read_series(session, running.id, "loss", None, None, None)[0].steps) == 10


def test_writing_to_a_deleted_experiment(session: Session, running: store.ExperimentRecord) -> None:
    store.write_chunks(session, running.id, _flush(0, 5), [])  # fills the series-id cache
    store.delete_experiment(session, running.id)
    with pytest.raises(store.ExperimentNotFound):
        store.write_chunks(session, running.id, _flush(5, 5), [])
    with pytest.raises(store.ExperimentNotFound):
        store.write_chunks(session, "never-existed", _flush(0, 5), [])


def test_mismatched_chunk_is_rejected(session: Session, running: store.ExperimentRecord) -> None:
    bad = store.SeriesChunk("loss", None, -1, np.arange(3), np.ones(4))
    with pytest.raises(ValueError, match="shape"):
        store.write_chunks(session, running.id, [bad], [])


def test_timesteps_round_trip(session: Session, running: store.ExperimentRecord) -> None:
    timesteps = np.array([0, 10, 25, 49])
    rng = np.random.default_rng(0)
    written = []
    for start in (0, 3):
        steps = np.arange(start, start + 3)
        hidden = [rng.random((3, 4)) for _ in range(2)]
        written.append(hidden)
        chunks = [
            store.TimestepChunk(layer, steps, timesteps, hidden[layer], hidden[layer] * 2 if layer == 0 else None)
            for layer in range(2)
        ]
        store.write_chunks(session, running.id, [], chunks, progress_step=int(steps[-1]))
        store.write_chunks(session, running.id, [], chunks)  # retried: no duplicate
    data = store.read_timesteps(session, running.id)
    assert [d.layer_index for d in data] == [0, 1]
    np.testing.assert_array_equal(data[0].steps, np.arange(6))
    np.testing.assert_array_equal(data[0].timesteps, timesteps)
    np.testing.assert_array_equal(data[0].hidden_grad_norm, np.vstack([written[0][0], written[1][0]]))
    np.testing.assert_array_equal(data[0].cell_grad_norm, 2 * data[0].hidden_grad_norm)
    assert data[1].cell_grad_norm is None
    one = store.read_timesteps(session, running.id, layer_index=1, step=4)
    assert len(one) == 1 and one[0].steps.tolist() == [4]
    np.testing.assert_array_equal(one[0].hidden_grad_norm, written[1][1][1:2])


def test_the_catalog_finds_what_find_series_finds(session: Session, running: store.ExperimentRecord) -> None:
    # A series read validates and looks up its series from one catalog query; it must pick
    # the same series, in the same input → output order, as the per-metric query.
    store.write_chunks(session, running.id, _flush(0, 50), [], progress_step=49)
    catalog = store.series_catalog(session, running.id)
    assert catalog.metrics == store.list_metrics(session, running.id) == {"grad_norm": LAYERS, "loss": [None]}
    for metric, layers in [
        ("grad_norm", None), ("grad_norm", [LAYERS[2], LAYERS[0]]), ("grad_norm", ["no.such.layer"]),
        ("loss", None), ("loss", [None]), ("no_such_metric", None),
    ]:  # fmt: skip
        found = catalog.find(metric, layers)
        assert found == store.find_series(session, running.id, metric, layers), (metric, layers)
    assert [ref.layer for ref in catalog.find("grad_norm", [LAYERS[2], LAYERS[0]])] == [LAYERS[0], LAYERS[2]]
    assert [ref.layer for ref in catalog.find("loss")] == [None]
