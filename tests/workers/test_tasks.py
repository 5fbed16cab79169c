"""The `gradwatch.train` task's body (`run_experiment`) with the real engine on real
databases: claim, train, store, finish; a second delivery does nothing; every failure
ends as `failed` with the reason. Through a real Celery worker process: tests/e2e."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service import store
from service.config import Settings
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from tests.conftest import REPO_ROOT
from workers import tasks
from workers.tasks import TASK_NAME, run_experiment

DIGITS = {
    "name": "digits-mlp",
    "model": {"type": "mlp", "hidden_sizes": [16, 16], "activation": "tanh"},
    "dataset": {"name": "digits"},
    "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "steps": 30, "seed": 0},
}


def validated(spec: dict) -> dict:
    """The spec as the API stores it: validated and fully defaulted."""
    from service.schemas.spec import ExperimentSpec

    return ExperimentSpec.model_validate(spec).model_dump(mode="json")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gradwatch.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    return url


@pytest.fixture
def config(database_url: str, tmp_path: Path, mnist_data_dir: Path) -> Settings:
    return Settings(home=tmp_path, database_url=database_url, data_dir=mnist_data_dir, allow_download=False, flush_every=10, worker_poll_s=0.05)


@pytest.fixture
def sessions(config: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(config.resolved_database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def create(sessions: sessionmaker[Session], spec: dict) -> str:
    spec = validated(spec)
    with sessions() as session:
        return store.create_experiment(session, spec.get("name") or "test", [], spec, "cpu").id


def get(sessions: sessionmaker[Session], experiment_id: str) -> store.ExperimentRecord:
    with sessions() as session:
        return store.get_experiment(session, experiment_id)


def test_the_task_is_registered_under_its_contract_name() -> None:
    assert tasks.train_experiment.name == TASK_NAME == "gradwatch.train"
    assert tasks.train_experiment.reject_on_worker_lost is True
    assert tasks.app.conf.task_acks_late is True
    assert tasks.app.conf.worker_prefetch_multiplier == 1
    assert tasks.app.conf.accept_content == ["json"]


def test_the_worker_modules_do_not_import_torch() -> None:
    """The prefork parent imports these before forking; CUDA must not be initialised there."""
    code = "import sys, workers.celery_app, workers.tasks, workers.writer; print('torch' in sys.modules)"
    answer = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "False", answer.stderr


def test_a_run_is_claimed_trained_stored_and_finished(config, sessions) -> None:
    experiment_id = create(sessions, DIGITS)
    assert run_experiment(experiment_id, config, worker="test", session_factory=sessions) == "succeeded"
    experiment = get(sessions, experiment_id)
    assert experiment.status == "succeeded" and experiment.error is None
    assert experiment.worker == "test" and experiment.finished_at >= experiment.started_at
    assert experiment.progress_step == 30
    assert set(experiment.result) == {"final_loss", "final_accuracy", "diverged_at_step", "test_loss", "test_accuracy", "steps_done", "baseline"}
    # The engine trained in this process on the same spec and seed gives the same numbers.
    from workers.engine import train
    from workers.spec import to_run_config

    expected = train(to_run_config(validated(DIGITS), config), lambda batch: None)
    assert experiment.result["final_loss"] == pytest.approx(expected.final_loss, rel=1e-6)
    assert experiment.result["final_accuracy"] == pytest.approx(expected.final_accuracy, abs=1e-9)
    assert experiment.result["test_loss"] == pytest.approx(expected.test_loss, rel=1e-6)
    assert experiment.result["diverged_at_step"] is None and experiment.result["steps_done"] == 30
    with sessions() as session:
        (loss,) = store.read_series(session, experiment_id, "loss")
        (accuracy,) = store.read_series(session, experiment_id, "accuracy")
        grads = store.read_series(session, experiment_id, "grad_mean_abs")
    np.testing.assert_array_equal(loss.steps, np.arange(30))
    # The global accuracy series is stored at every step; its last value is the result's.
    np.testing.assert_array_equal(accuracy.steps, np.arange(30))
    assert accuracy.layer is None and accuracy.values[-1] == experiment.result["final_accuracy"]
    assert np.all((accuracy.values >= 0) & (accuracy.values <= 1)) and len(set(accuracy.values.tolist())) > 1
    assert len(grads) >= 3 and all(np.all(np.isfinite(g.values)) for g in grads)


def test_a_second_delivery_does_nothing(config, sessions) -> None:
    experiment_id = create(sessions, DIGITS)
    assert run_experiment(experiment_id, config, session_factory=sessions) == "succeeded"
    finished = get(sessions, experiment_id)
    assert run_experiment(experiment_id, config, session_factory=sessions) == "skipped"
    assert get(sessions, experiment_id) == finished


def test_a_delivery_while_running_does_nothing(config, sessions) -> None:
    experiment_id = create(sessions, DIGITS)
    with sessions() as session:
        store.claim_experiment(session, experiment_id, "the first delivery")
    assert run_experiment(experiment_id, config, session_factory=sessions) == "skipped"
    running = get(sessions, experiment_id)
    assert running.status == "running" and running.worker == "the first delivery"


def test_two_workers_claiming_one_run_at_once_train_it_once(config, sessions) -> None:
    """Two deliveries of the same experiment, released together by a barrier right before
    their claims, three rounds: one trains it, the other does nothing, no point twice."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    short = {**DIGITS, "training": {**DIGITS["training"], "steps": 10}}
    for _ in range(3):
        experiment_id = create(sessions, short)
        barrier = threading.Barrier(2)
        first_session = threading.local()

        def racing_sessions() -> Session:
            # The first session of each delivery's own thread is its claim's (the writer's
            # threads, which run_experiment starts, are not held).
            if threading.current_thread().name.startswith("delivery") and not getattr(first_session, "opened", False):
                first_session.opened = True
                barrier.wait(timeout=30)
            return sessions()

        with ThreadPoolExecutor(2, thread_name_prefix="delivery") as pool:
            outcomes = sorted(pool.map(
                lambda worker: run_experiment(experiment_id, config, worker=worker, session_factory=racing_sessions),
                ["worker-a", "worker-b"],
            ))
        assert outcomes == ["skipped", "succeeded"]
        experiment = get(sessions, experiment_id)
        assert experiment.status == "succeeded" and experiment.progress_step == 10
        with sessions() as session:
            (loss,) = store.read_series(session, experiment_id, "loss")
            stored = session.execute(
                sa.text("SELECT count(*) FROM point_chunks c JOIN series s ON s.id = c.series_id "
                        "WHERE s.experiment_id = :id AND s.metric = 'loss'"),
                {"id": experiment_id},
            ).scalar_one()
        np.testing.assert_array_equal(loss.steps, np.arange(10))
        assert stored == 1, "one flush of 10 steps, written once"


def test_an_unknown_or_deleted_experiment_is_skipped(config, sessions) -> None:
    assert run_experiment("0" * 32, config, session_factory=sessions) == "skipped"


def test_missing_mnist_fails_with_the_engines_message(config, sessions, tmp_path) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    offline = config.model_copy(update={"data_dir": empty})
    spec = {**DIGITS, "dataset": {"name": "mnist", "split": "test", "limit": 100}}
    experiment_id = create(sessions, spec)
    assert run_experiment(experiment_id, offline, session_factory=sessions) == "failed"
    experiment = get(sessions, experiment_id)
    assert experiment.status == "failed" and experiment.finished_at is not None
    assert experiment.error.startswith("training failed: ")
    assert str(empty / "mnist") in experiment.error
    assert "t10k-images-idx3-ubyte" in experiment.error


def test_a_cancel_requested_before_training_ends_cancelled(config, sessions) -> None:
    experiment_id = create(sessions, {**DIGITS, "training": {**DIGITS["training"], "steps": 100_000}})
    original_claim = store.claim_experiment

    def claim_then_cancel(session, experiment_id, worker):
        record = original_claim(session, experiment_id, worker)
        store.request_cancel(session, experiment_id)
        return record

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "claim_experiment", claim_then_cancel)
        assert run_experiment(experiment_id, config, session_factory=sessions) == "cancelled"
    experiment = get(sessions, experiment_id)
    assert experiment.status == "cancelled"
    assert experiment.progress_step < 1000  # stopped within a poll, far from 100,000


def test_storage_that_keeps_failing_fails_the_run(config, sessions) -> None:
    import sqlalchemy.exc

    def broken_write(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("disk full"))

    experiment_id = create(sessions, {**DIGITS, "training": {**DIGITS["training"], "steps": 100_000}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "write_chunks", broken_write)
        impatient = config.model_copy(update={"db_outage_tolerance_s": 0.3})
        assert run_experiment(experiment_id, impatient, session_factory=sessions) == "failed"
    experiment = get(sessions, experiment_id)
    assert "disk full" in experiment.error and experiment.progress_step < 100_000


def test_a_database_outage_before_the_claim_retries_the_task(redis_url: str, mnist_data_dir: Path, tmp_path: Path) -> None:
    """A real worker whose database does not answer (a PostgreSQL URL on a port nothing
    listens on): the claim itself fails, and Celery retries the task with the backoff of
    `train_experiment` (5 s, then 10 s), through the real broker."""
    import re

    from service.queue import Enqueuer
    from tests.e2e.stack import Stack, free_port

    home = tmp_path / "home"
    home.mkdir()
    unreachable = f"postgresql+psycopg://root@127.0.0.1:{free_port()}/gradwatch"
    stack = Stack(unreachable, redis_url, home, mnist_data_dir)
    try:
        # The worker rides out a short outage itself (GRADWATCH_DB_OUTAGE_TOLERANCE_S); past
        # it, the task's own retry takes over: a tolerance of 1 s gets there at once.
        worker = stack.start_worker(GRADWATCH_DB_OUTAGE_TOLERANCE_S="1", GRADWATCH_DB_RETRY_MAX_BACKOFF_S="0.2")
        experiment_id = "e" * 32
        enqueuer = Enqueuer(Settings(home=home, broker_url=redis_url))
        try:
            enqueuer.enqueue(experiment_id, "cpu")
        finally:
            enqueuer.close()
        retry = re.compile(r"Task gradwatch\.train\[[^\]]+\] retry: Retry in (\d+)s: DatabaseUnreachable")
        deadline = time.monotonic() + 120  # a bound on the wait, not the thing measured
        while len(retry.findall(worker.log.read_text(errors="replace"))) < 2:
            assert worker.popen.poll() is None and time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        log = worker.log.read_text(errors="replace")
        assert [int(countdown) for countdown in retry.findall(log)][:2] == [5, 10], worker.tail()
        assert "Connection refused" in log or "connection refused" in log, worker.tail()
        assert "training experiment" not in log  # nothing was claimed, nothing trained
    finally:
        print(stack.logs())
        stack.stop()


POINTS_SPECS = {
    "mlp relu": {"model": {"type": "mlp", "hidden_sizes": [8, 6, 4], "activation": "relu"}, "dataset": {"name": "digits"}},
    "rnn identity": {"model": {"type": "rnn", "hidden_size": 6, "num_layers": 2, "activation": "identity"}, "dataset": {"name": "adding", "seq_len": 12, "limit": 64}},
    "lstm": {"model": {"type": "lstm", "hidden_size": 5, "num_layers": 2}, "dataset": {"name": "copy", "seq_len": 4, "limit": 64}},
    "gru": {"model": {"type": "gru", "hidden_size": 7}, "dataset": {"name": "temporal_order", "seq_len": 20, "limit": 64}},
}


@pytest.mark.parametrize("name", sorted(POINTS_SPECS))
def test_a_run_stores_exactly_the_points_its_budget_estimated(config, sessions, name: str) -> None:
    import sqlalchemy as sa

    from service.budgets import estimate_points, run_shape

    spec = POINTS_SPECS[name] | {
        "training": {"optimizer": "sgd", "lr": 0.01, "batch_size": 16, "steps": 20, "seed": 0},
        "logging": {"every": 3, "timesteps_every": 2, "max_timesteps": 8},
    }
    experiment_id = create(sessions, spec)
    assert run_experiment(experiment_id, config, session_factory=sessions) == "succeeded"
    with sessions() as session:
        series_points = session.execute(
            sa.text(
                "SELECT count(DISTINCT s.id), sum(c.n_points) FROM point_chunks c JOIN series s ON s.id = c.series_id "
                "WHERE s.experiment_id = :id"
            ),
            {"id": experiment_id},
        ).one()
        timestep_points = sum(
            steps * timesteps * (2 if has_cell else 1)
            for steps, timesteps, has_cell in session.execute(
                sa.text(
                    "SELECT n_steps, n_timesteps, cell_grad_norm IS NOT NULL FROM timestep_chunks WHERE experiment_id = :id"
                ),
                {"id": experiment_id},
            )
        )
    estimate = estimate_points(run_shape(get(sessions, experiment_id).spec))
    assert series_points[0] == estimate.series
    assert int(series_points[1]) + timestep_points == estimate.total
    assert (timestep_points > 0) == (name != "mlp relu")


def test_the_claim_rides_out_an_outage_up_to_the_tolerance(config) -> None:
    """A database that refuses connections (nothing listens on its port): the claim is
    retried until the tolerance is spent, then the task's own retry takes over."""
    from tests.e2e.stack import free_port
    from workers.outage import DatabaseUnreachable

    absent = make_engine(f"postgresql+psycopg://root@127.0.0.1:{free_port()}/none")
    impatient = config.model_copy(update={"db_outage_tolerance_s": 0.5, "db_retry_max_backoff_s": 0.1})
    try:
        with pytest.raises(DatabaseUnreachable, match=r"^database unreachable for \d+ s while claiming experiment abc"):
            run_experiment("abc", impatient, session_factory=make_session_factory(absent))
    finally:
        absent.dispose()
