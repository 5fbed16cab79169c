"""/api/v1/reproductions and /api/v1/reproduction-runs over HTTP: the catalogue, a run
created as the caller's sweep, its report before and after its members finish.

The members here are finished by the test (as the sweep tests do) with the engine-like
records of tests/service/analysis/synthetic.py; tests/e2e/test_reproductions.py trains
them with a real worker."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import Client
from sqlalchemy.orm import Session

from service import store
from service.api.main import create_app
from service.config import Settings
from service.reproductions.catalogue import BY_NAME
from service.store.records import ExperimentRecord
from service.store.sweeps import sweep_members
from tests.service.analysis.synthetic import recurrent_run
from tests.service.api.conftest import bearer, queued_messages

API = "/api/v1"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


def test_the_catalogue_lists_every_study_with_its_claims(client: Client) -> None:
    body = client.get(f"{API}/reproductions").json()
    names = [study["name"] for study in body["studies"]]
    assert names == list(BY_NAME)
    assert {"essay-sigmoid-depth", "essay-clipping", "essay-lstm-memory", "glorot-bengio-2010", "saxe-2014",
            "pascanu-2013", "arjovsky-2016-copy"} <= set(names)
    lstm = client.get(f"{API}/reproductions/essay-lstm-memory").json()
    assert lstm["protocol"]["grid"] == {"model.type": ["rnn", "lstm"]}
    [claim] = lstm["claims"]
    assert claim["source"] and claim["paper_value"]
    assert {c["measure"] for c in claim["checks"]} == {"horizon", "first_to_last"}
    assert set(lstm["measures"]) == {"horizon", "first_to_last"}
    missing = client.get(f"{API}/reproductions/no-such-study")
    assert missing.status_code == 404 and "essay-lstm-memory" in missing.json()["message"]


def _finish(session: Session, report: dict) -> None:
    """What a worker does for each member: claim, write records, finish (synthetic runs)."""
    for member in store_members(session, report["sweep_id"]):
        kind = member.spec["model"]["type"]
        run = recurrent_run(kind)
        store.claim_experiment(session, member.id, "test-worker")
        store.write_chunks(session, member.id, run.chunks(), timesteps=run.timestep_chunks(), progress_step=990)
        store.finish_experiment(session, member.id, "succeeded", {"test_loss": 0.001, "steps_done": 1000})


def store_members(session: Session, sweep_id: str) -> list[ExperimentRecord]:
    return sweep_members(session, sweep_id)


def test_a_run_is_the_callers_sweep_and_reports_each_claim(
    client: Client, api_session: Session, settings: Settings, app: FastAPI
) -> None:
    response = client.post(f"{API}/reproductions/essay-lstm-memory/runs", json={})
    assert response.status_code == 201, response.text
    run = response.json()
    assert response.headers["location"] == f"{API}/reproduction-runs/{run['id']}"
    assert run["status"] == "queued" and run["reproduced"] is None and run["variant"] is False
    assert len(queued_messages(settings)) == 2  # both members enqueued after the commit
    sweep = client.get(f"{API}/sweeps/{run['sweep_id']}").json()
    assert sweep["owner"] == run["owner"] and sorted(m["params"]["model.type"] for m in sweep["members"]) == ["lstm", "rnn"]
    [claim] = run["claims"]
    assert all(check["passed"] is None and check["measured"] is None for check in claim["checks"])

    _finish(api_session, run)
    report = client.get(f"{API}/reproduction-runs/{run['id']}").json()
    assert report["status"] == "finished"
    checks = {check["label"]: check for check in report["claims"][0]["checks"]}
    lstm_horizon = checks["lstm: memory horizon after training (of 49)"]
    assert lstm_horizon["measured"] == 49 and lstm_horizon["passed"] is True
    assert lstm_horizon["plots"]["timesteps"].endswith(f"/experiments/{lstm_horizon['experiment_id']}/timesteps.png")
    rnn_horizon = checks["rnn: memory horizon after training (of 49)"]
    assert rnn_horizon["measured"] == 7 and rnn_horizon["passed"] is True
    # The synthetic LSTM's ‖∂L/∂h_1‖/‖∂L/∂h_T‖ is the measured seed's, inside the band.
    assert report["claims"][0]["reproduced"] is True and report["reproduced"] is True

    # Another owner sees neither the run nor its sweep.
    other = bearer(app, "someone-else")
    assert client.get(f"{API}/reproduction-runs/{run['id']}", headers=other).status_code == 404
    assert client.get(f"{API}/sweeps/{run['sweep_id']}", headers=other).status_code == 404


def test_a_variant_applies_its_overrides_after_the_grid(client: Client, api_session: Session) -> None:
    response = client.post(f"{API}/reproductions/essay-lstm-memory/runs", json={"overrides": {"model.type": "rnn"}})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["variant"] is True and run["overrides"] == {"model.type": "rnn"}
    members = store_members(api_session, run["sweep_id"])
    # The member the protocol calls "lstm" is a tanh RNN now: the claim must fail on it.
    assert sorted(m.sweep_params["model.type"] for m in members) == ["lstm", "rnn"]
    assert {m.spec["model"]["type"] for m in members} == {"rnn"}
    _finish(api_session, run)
    report = client.get(f"{API}/reproduction-runs/{run['id']}").json()
    checks = {check["label"]: check for check in report["claims"][0]["checks"]}
    assert checks["lstm: memory horizon after training (of 49)"]["measured"] == 7
    assert report["reproduced"] is False


def test_an_override_the_spec_refuses_is_a_422(client: Client) -> None:
    unknown = client.post(f"{API}/reproductions/essay-lstm-memory/runs", json={"overrides": {"model.kind": "rnn"}})
    assert unknown.status_code == 422
    invalid = client.post(f"{API}/reproductions/essay-lstm-memory/runs", json={"overrides": {"model.type": "transformer"}})
    assert invalid.status_code == 422 and "model" in invalid.text
    assert client.post(f"{API}/reproductions/nothing/runs", json={}).status_code == 404
    assert client.get(f"{API}/reproduction-runs/{'0' * 32}").status_code == 404
