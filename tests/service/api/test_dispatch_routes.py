"""Submitting records when each task was handed to the broker (`dispatched_at`), for a
single experiment and for every member of a sweep: what the dispatch reconciler reads."""

from __future__ import annotations

from httpx import Client
from sqlalchemy.orm import Session

from service import store
from service.config import Settings
from service.queue import Enqueuer
from tests.service.api.conftest import MLP


def test_a_submission_records_its_dispatch(client: Client, api_session: Session, settings: Settings) -> None:
    experiment = client.post("/api/v1/experiments", json=MLP).json()
    sweep = client.post("/api/v1/sweeps", json={"base": MLP, "grid": {"model.activation": ["relu", "tanh"]}}).json()
    ids = [experiment["id"], *(member["id"] for member in sweep["members"])]
    records = [store.get_experiment(api_session, experiment_id) for experiment_id in ids]
    assert all(record.dispatched_at is not None and record.dispatched_at >= record.created_at for record in records)
    enqueuer = Enqueuer(settings)
    try:
        assert enqueuer.waiting_ids("cpu") == set(ids)
    finally:
        enqueuer.close()
