"""/summary served from the process's cache (service/api/summary_cache.py), on SQLite and
PostgreSQL: a hit is the body a fresh computation renders, costs one count query, and
anything the summary reads that changes (a chunk of points, of timesteps or of histograms,
the status, the result, the name) makes the next read compute again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.orm import Session

from service import store
from service.api.main import create_app
from service.api.summary_cache import SummaryCache, SummaryInputs
from service.config import Settings
from service.db.models import Experiment
from service.store.data_version import DataVersion
from service.store.histograms import HistogramChunk
from service.store.records import SeriesChunk
from tests.service.analysis.synthetic import exploding_run, mlp_run, recurrent_run, store_run
from tests.service.api.conftest import TEST_OWNER, api_client

API = "/api/v1/experiments"


@pytest.fixture
def uncached(settings: Settings) -> Iterator[httpx.Client]:
    """A second API on the same database that keeps nothing: every summary computed afresh."""
    app = create_app(settings.model_copy(update={"summary_cache_bytes": 0}))
    with api_client(app) as client:
        yield client


def _running(session: Session, run_steps: int = 200) -> str:
    """A sigmoid MLP still running, with its points stored up to `run_steps`."""
    run = mlp_run("sigmoid", n_steps=run_steps)
    record = store.create_experiment(session, name="cached", tags=[], spec=_spec(run.spec), queue="cpu", owner=TEST_OWNER)
    store.claim_experiment(session, record.id, "w")
    store.write_chunks(session, record.id, run.chunks(50), progress_step=run_steps - 1)
    return record.id


def _spec(spec: dict) -> dict:
    from service.schemas.spec import ExperimentSpec

    return ExperimentSpec.model_validate(spec).model_dump(mode="json")


def _summary(client: httpx.Client, experiment_id: str, **params: int) -> bytes:
    response = client.get(f"{API}/{experiment_id}/summary", params=params)
    assert response.status_code == 200, response.text
    return response.content


def _cache(app: FastAPI) -> SummaryCache:
    return app.state.summary_cache


def test_a_cached_summary_is_the_bytes_a_fresh_computation_renders(
    app: FastAPI, client: httpx.Client, uncached: httpx.Client, api_session: Session
) -> None:
    ids = [
        store_run(api_session, mlp_run("sigmoid"), owner=TEST_OWNER),
        store_run(api_session, exploding_run(clipping=False), owner=TEST_OWNER),
        store_run(api_session, recurrent_run("lstm"), owner=TEST_OWNER),
    ]
    for experiment_id in ids:
        for max_points in (10, 500):
            first = _summary(client, experiment_id, max_points=max_points)
            hit = _summary(client, experiment_id, max_points=max_points)
            assert hit == first == _summary(uncached, experiment_id, max_points=max_points)
    assert len(_cache(app)) == 6  # one entry per experiment and max_points


def test_new_points_invalidate_the_summary(
    app: FastAPI, client: httpx.Client, uncached: httpx.Client, api_session: Session
) -> None:
    experiment_id = _running(api_session)
    before = _summary(client, experiment_id)
    assert _summary(client, experiment_id) == before
    # One more flush: a loss that goes non-finite makes the run exploding.
    steps = np.arange(200, 250, dtype=np.int64)
    loss = np.full(50, np.nan)
    store.write_chunks(api_session, experiment_id, [SeriesChunk("loss", None, -1, steps, loss)], progress_step=249)
    after = _summary(client, experiment_id)
    assert after != before
    assert after == _summary(uncached, experiment_id)
    assert b'"verdict":"exploding"' in after


def test_a_chunk_written_below_the_last_one_invalidates_it(
    client: httpx.Client, uncached: httpx.Client, api_session: Session
) -> None:
    """A resumed run re-records steps already stored, in chunks with other first steps:
    the key counts chunks rather than trusting the highest step."""
    experiment_id = _running(api_session)
    before = _summary(client, experiment_id)
    steps = np.arange(25, 75, dtype=np.int64)
    store.write_chunks(
        api_session, experiment_id, [SeriesChunk("grad_nonfinite", None, -1, steps, np.ones(50))], progress_step=199
    )
    after = _summary(client, experiment_id)
    assert after != before
    assert after == _summary(uncached, experiment_id)


def test_a_status_change_and_the_result_invalidate_it(
    client: httpx.Client, uncached: httpx.Client, api_session: Session
) -> None:
    experiment_id = _running(api_session)
    running = _summary(client, experiment_id)
    assert b'"status":"running"' in running
    store.finish_experiment(api_session, experiment_id, "succeeded", {"steps_done": 200, "final_loss": 0.1})
    finished = _summary(client, experiment_id)
    assert b'"status":"succeeded"' in finished
    assert finished == _summary(uncached, experiment_id)
    # The result alone (same status): the non-finite summary quotes where it diverged.
    changed_result = {"steps_done": 200, "diverged_at_step": 150}
    api_session.execute(sa.update(Experiment).where(Experiment.id == experiment_id).values(result=changed_result))
    api_session.commit()
    changed = _summary(client, experiment_id)
    assert b'"diverged_at_step":150' in changed
    assert changed == _summary(uncached, experiment_id)


def test_a_new_name_invalidates_it(client: httpx.Client, api_session: Session) -> None:
    experiment_id = store_run(api_session, mlp_run("relu"), owner=TEST_OWNER)
    assert b'"name":"renamed"' not in _summary(client, experiment_id)
    api_session.execute(sa.update(Experiment).where(Experiment.id == experiment_id).values(name="renamed"))
    api_session.commit()
    assert b'"name":"renamed"' in _summary(client, experiment_id)


def test_timestep_and_histogram_chunks_invalidate_it(
    client: httpx.Client, uncached: httpx.Client, api_session: Session
) -> None:
    recurrent = store_run(api_session, recurrent_run("rnn", n_steps=50), owner=TEST_OWNER)
    before = _summary(client, recurrent)
    more = recurrent_run("rnn", n_steps=60).timestep_chunks(10)[-1]  # steps 500-590, not yet stored
    more = type(more)(more.layer_index, more.steps, more.timesteps, more.hidden_grad_norm * 1e-6, more.cell_grad_norm)
    store.write_chunks(api_session, recurrent, [], [more])
    after = _summary(client, recurrent)
    assert after != before
    assert after == _summary(uncached, recurrent)

    saturating = _running(api_session)  # sigmoid: the saturation finding reads act_pre histograms
    before = _summary(client, saturating)
    assert b'"saturation":null' in before
    edges = np.linspace(-10.0, 10.0, 21)
    counts = np.zeros((2, 24), dtype=np.int64)
    counts[:, 3] = 100  # every pre-activation in [-9, -8): deep in the sigmoid's flat tail
    histogram = HistogramChunk("act_pre", "layers.0", 0, np.array([0, 100], dtype=np.int64), counts, edges)
    store.write_chunks(api_session, saturating, [], histograms=[histogram])
    after = _summary(client, saturating)
    assert b'"saturation":null' not in after
    assert after == _summary(uncached, saturating)


@contextlib.contextmanager
def summary_statements(app: FastAPI) -> Iterator[list[str]]:
    """The statements the app issues meanwhile, but for those every request of an
    experiment issues (its token, its row and tags). psycopg's binary cursor of the whole
    read (service/store/whole_series.py) bypasses SQLAlchemy's events, but a summary
    computed on PostgreSQL still issues its series lookup and histogram read."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001, PLR0913
        statement = " ".join(statement.split())
        if not any(fixed in statement for fixed in ("api_tokens", "FROM experiments ", "FROM experiment_tags")):
            statements.append(statement)

    sa.event.listen(app.state.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(app.state.engine, "before_cursor_execute", record)


def test_a_hit_issues_only_the_count_query(app: FastAPI, client: httpx.Client, api_session: Session) -> None:
    experiment_id = store_run(api_session, mlp_run("tanh"), owner=TEST_OWNER)
    with summary_statements(app) as miss:
        _summary(client, experiment_id)
    with summary_statements(app) as hits:
        for _ in range(3):
            _summary(client, experiment_id)
    assert len(miss) > 1, miss
    assert len(hits) == 3, hits  # one per request
    assert all(s.startswith("SELECT") and s.count("count(*)") == 4 for s in hits), hits
    assert not any("values" in s or "steps" in s for s in hits), hits


@pytest.mark.usefixtures("client")  # its lifespan disposes of the engine api_session uses
def test_the_cache_keeps_to_its_size_bound(settings: Settings, api_session: Session) -> None:
    ids = [store_run(api_session, mlp_run("relu", seed=seed), owner=TEST_OWNER) for seed in range(3)]
    with api_client(create_app(settings)) as probe:
        one_body = len(_summary(probe, ids[0]))
    app = create_app(settings.model_copy(update={"summary_cache_bytes": 2 * one_body + one_body // 2}))
    cache = _cache(app)
    with api_client(app) as client:
        for experiment_id in ids:
            _summary(client, experiment_id)
            assert cache.size_bytes <= cache.max_bytes
        assert len(cache) == 2
        with summary_statements(app) as latest:
            _summary(client, ids[2])
        assert len(latest) == 1  # kept
        with summary_statements(app) as evicted:
            _summary(client, ids[0])
        assert len(evicted) > 1  # the least recently used went, and is computed again
        assert cache.size_bytes <= cache.max_bytes and len(cache) == 2


def test_the_lru_drops_the_least_recently_used_and_what_does_not_fit() -> None:
    version = DataVersion(1, 2, 0, 0)
    inputs = SummaryInputs("succeeded", "a", {"model": {}}, None, version)
    cache = SummaryCache(max_bytes=10)
    cache.put("a", 500, inputs, b"1234")
    cache.put("b", 500, inputs, b"1234")
    assert cache.get("a", 500, inputs) == b"1234"  # now the most recent
    cache.put("c", 500, inputs, b"1234")
    assert cache.get("b", 500, inputs) is None and cache.get("a", 500, inputs) == b"1234"
    assert cache.size_bytes == 8
    cache.put("d", 500, inputs, b"x" * 11)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("d", 500, inputs) is None and len(cache) == 2
    newer = SummaryInputs("succeeded", "a", {"model": {}}, None, DataVersion(1, 3, 0, 0))
    assert cache.get("a", 500, newer) is None  # stale: dropped
    assert len(cache) == 1 and cache.size_bytes == 4
    assert SummaryCache(max_bytes=0).get("a", 500, inputs) is None
