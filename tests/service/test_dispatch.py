"""The dispatch reconciler, on both databases and both brokers: rows never handed to the
broker and rows whose message was lost are sent again; rows whose message still waits are
not (no duplicates pile up); rows no longer queued are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session

from service import store
from service.config import Settings
from service.db.engine import make_engine, make_session_factory
from service.dispatch import hand_over, reconcile_once
from service.queue import Enqueuer, broker_folders

SPEC = {"training": {"steps": 10}}


def _create(session: Session, name: str) -> store.ExperimentRecord:
    return store.create_experiment(session, name=name, tags=[], spec=SPEC, queue="cpu")


def _waiting(enqueuer: Enqueuer) -> list[str]:
    return sorted(enqueuer.waiting_ids("cpu") or ())


@pytest.fixture(params=["embedded", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "embedded" else request.getfixturevalue("redis_url")


def _drop_message(settings: Settings, experiment_id: str) -> None:
    """What a broker restarted empty does to one message."""
    if settings.uses_embedded_broker:
        for path in broker_folders(settings)["queue"].glob("*.cpu.msg"):
            if experiment_id in path.read_text():
                path.unlink()
        return
    client = redis.Redis.from_url(settings.broker_url)
    try:
        for raw in client.lrange("cpu", 0, -1):
            if experiment_id.encode() in raw:
                client.lrem("cpu", 0, raw)
    finally:
        client.close()


def test_reconcile_sends_what_the_broker_lacks_and_only_that(database_url: str, broker_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=database_url, broker_url=broker_url, redispatch_after_s=0)
    engine = make_engine(database_url)
    session_factory = make_session_factory(engine)
    enqueuer = Enqueuer(settings)
    try:
        with session_factory() as session:
            never_sent = _create(session, "never-sent")  # the API died after the commit
            waiting, lost, running = (_create(session, name) for name in ("waiting", "lost", "running"))
            assert hand_over(session, enqueuer, [waiting, lost, running], settings) == []
            dispatched = {e.id: e.dispatched_at for e in map(lambda r: store.get_experiment(session, r.id), (waiting, lost, running))}
            assert all(at is not None for at in dispatched.values())
            assert store.get_experiment(session, never_sent.id).dispatched_at is None
            _drop_message(settings, lost.id)
            assert store.claim_experiment(session, running.id, "w") is not None
        assert _waiting(enqueuer) == sorted([waiting.id, running.id])

        sent = reconcile_once(session_factory, enqueuer, settings)
        assert sorted(sent) == sorted([never_sent.id, lost.id])
        assert _waiting(enqueuer) == sorted([never_sent.id, waiting.id, lost.id, running.id])
        with session_factory() as session:
            refreshed = store.get_experiment(session, waiting.id).dispatched_at
            assert refreshed > dispatched[waiting.id]  # seen waiting: a new period starts
            assert store.get_experiment(session, never_sent.id).dispatched_at is not None
            assert store.get_experiment(session, running.id).dispatched_at == dispatched[running.id]

        # Every queued row's message waits now: a second pass sends nothing more.
        assert reconcile_once(session_factory, enqueuer, settings) == []
        messages = enqueuer.waiting_ids("cpu")
        assert messages is not None and len(messages) == 4
    finally:
        enqueuer.close()
        engine.dispose()


def test_reconcile_waits_redispatch_after_s(database_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=database_url, redispatch_after_s=3600)
    engine = make_engine(database_url)
    session_factory = make_session_factory(engine)
    enqueuer = Enqueuer(settings)
    try:
        with session_factory() as session:
            fresh = _create(session, "fresh")
        # Committed a moment ago and not sent yet: its API may still be about to send it.
        assert reconcile_once(session_factory, enqueuer, settings) == []
        assert _waiting(enqueuer) == []
        assert reconcile_once(session_factory, enqueuer, settings.model_copy(update={"redispatch_after_s": 0})) == [fresh.id]
    finally:
        enqueuer.close()
        engine.dispose()
