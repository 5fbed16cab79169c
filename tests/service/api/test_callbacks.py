"""Callbacks through the API on SQLite and PostgreSQL: the allow-list at submission, the
secret routes, and the delivery loop's passes against a real receiver on 127.0.0.1
(runs are ended through the store here; tests/e2e/test_pipelines.py ends them with a
real worker)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from httpx import Client
from sqlalchemy.orm import Session

from service import store
from service.api.main import create_app
from service.callbacks.delivery import deliver_once
from service.config import Settings
from tests.callback_receiver import Receiver
from tests.service.api.conftest import MLP, api_client, bearer

API = "/api/v1/experiments"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(fail_first=1)
    yield receiver
    receiver.close()


@pytest.fixture
def fast_app(settings: Settings) -> FastAPI:
    """Retries due at once, so that one pass after another tries again."""
    return create_app(settings.model_copy(update={"callback_retry_initial_s": 0.001}))


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[tuple[Client, Session]]:
    """A client of `app` and a session on its database, closed before its lifespan ends
    (which disposes the engine)."""
    with api_client(app) as client, app.state.session_factory() as session:
        yield client, session


def end(session: Session, experiment_id: str, status: str = "succeeded") -> None:
    store.claim_experiment(session, experiment_id, "test-worker")
    store.finish_experiment(session, experiment_id, status, {"final_loss": 0.5, "steps_done": 3})


def passes_until_quiet(app: FastAPI, limit: int = 10) -> list[list[str]]:
    outcomes = []
    for _ in range(limit):
        done = deliver_once(app)
        if not done:
            return outcomes
        outcomes.append(done)
        time.sleep(0.01)  # past the retry's due time
    raise AssertionError(f"still delivering after {limit} passes: {outcomes}")


def test_a_url_outside_the_allow_list_is_refused(client: Client) -> None:
    for url in ("http://10.0.0.5/hook", "http://metadata.google.internal/", "https://127.0.0.1.evil.example/x"):
        response = client.post(API, json=MLP | {"notify": {"url": url}})
        assert response.status_code == 422, url
        assert response.json()["detail"][0]["loc"] == ["body", "notify", "url"]
        assert "GRADWATCH_CALLBACK_ALLOWED_HOSTS" in response.json()["message"]
    sweep_level = {"base": MLP, "grid": {"training.seed": [0]}, "notify": {"url": "http://10.0.0.5/"}}
    in_base = {"base": MLP | {"notify": {"url": "http://10.0.0.5/"}}, "grid": {"training.seed": [0]}}
    for body, loc in ((sweep_level, ["body", "notify", "url"]), (in_base, ["body", "base", "notify", "url"])):
        response = client.post("/api/v1/sweeps", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc
        assert "'10.0.0.5' is not allowed" in response.json()["message"]
    bad_form = client.post(API, json=MLP | {"notify": {"url": "ftp://127.0.0.1/x", "events": ["succeeded"]}})
    assert bad_form.status_code == 422 and "http:// or https://" in bad_form.json()["message"]
    assert client.get(API).json()["total"] == 0


def test_the_allow_list_setting_admits_a_domain(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"callback_allowed_hosts": ".lab.example"}))
    with api_client(app) as client:
        ok = client.post(API, json=MLP | {"notify": {"url": "https://hooks.lab.example/gw"}})
        assert ok.status_code == 201 and ok.json()["spec"]["notify"]["events"][0] == "succeeded"
        assert client.post(API, json=MLP | {"notify": {"url": "http://127.0.0.1:1/"}}).status_code == 422


def test_secret_is_per_owner_and_rotates(app: FastAPI, client: Client) -> None:
    secret = client.get("/api/v1/callbacks/secret").json()
    assert secret["owner"] == "tester" and secret["secret"].startswith("gwcb_")
    assert client.get("/api/v1/callbacks/secret").json() == secret
    rotated = client.post("/api/v1/callbacks/secret/rotate").json()
    assert rotated["secret"] != secret["secret"]
    assert client.get("/api/v1/callbacks/secret").json() == rotated
    bobs = client.get("/api/v1/callbacks/secret", headers=bearer(app, "bob")).json()
    assert bobs["owner"] == "bob" and bobs["secret"] != rotated["secret"]
    assert client.get("/api/v1/callbacks/secret", headers=bearer(app, "tester", "read")).status_code == 403


def test_one_signed_event_per_ended_run_retried_after_a_500(
    fast_app: FastAPI, receiver: Receiver
) -> None:
    with serving(fast_app) as (client, session):
        created = client.post(API, json=MLP | {"notify": {"url": receiver.url}}).json()
        assert deliver_once(fast_app) == []  # still queued: nothing to say
        [waiting] = client.get(f"{API}/{created['id']}/deliveries").json()["items"]
        assert waiting["state"] == "waiting" and waiting["attempts"] == []
        end(session, created["id"])
        assert passes_until_quiet(fast_app) == [["pending"], ["delivered"]]
        secret = client.get("/api/v1/callbacks/secret").json()["secret"]
        [delivery] = client.get(f"{API}/{created['id']}/deliveries").json()["items"]

    assert [r.answered for r in receiver.received] == [500, 200]
    [accepted] = receiver.accepted()
    assert all(r.verified(secret) for r in receiver.received)
    assert not accepted.verified(secret + "x") and not accepted.verified(secret, tolerance_s=-1)
    assert abs(int(accepted.header("Gradwatch-Timestamp")) - time.time()) < 300
    assert accepted.header("Gradwatch-Delivery-Attempt") == "2"
    assert receiver.received[0].body == accepted.body  # every retry sends the same event
    event = accepted.event
    assert event["id"] == delivery["event_id"] == accepted.header("Gradwatch-Event-Id")
    assert event["type"] == "experiment.ended"
    assert event["experiment"]["id"] == created["id"] and event["experiment"]["status"] == "succeeded"
    assert event["experiment"]["result"]["final_loss"] == 0.5
    assert "verdict" in event["summary"]
    assert event["links"]["experiment"].endswith(f"{API}/{created['id']}")
    assert delivery["state"] == "delivered" and delivery["delivered_at"] is not None
    assert [(a["attempt"], a["status_code"]) for a in delivery["attempts"]] == [(1, 500), (2, 200)]
    assert "500" in delivery["attempts"][0]["error"] and delivery["attempts"][1]["error"] is None


def test_every_way_a_run_ends_is_announced_once(
    fast_app: FastAPI, receiver: Receiver
) -> None:
    receiver.fail_first = 0
    with serving(fast_app) as (client, session):
        notify = {"notify": {"url": receiver.url, "events": ["cancelled", "failed"]}}
        cancelled = client.post(API, json=MLP | notify).json()
        client.post(f"{API}/{cancelled['id']}/cancel")
        failed = client.post(API, json=MLP | notify).json()
        end(session, failed["id"], "failed")
        succeeded = client.post(API, json=MLP | notify).json()
        end(session, succeeded["id"], "succeeded")  # not among its events
        passes_until_quiet(fast_app)
        passes_until_quiet(fast_app)  # a later pass finds nothing more to send
        skipped = client.get(f"{API}/{succeeded['id']}/deliveries").json()["items"][0]
    statuses = sorted(r.event["experiment"]["status"] for r in receiver.accepted())
    assert statuses == ["cancelled", "failed"] and len(receiver.received) == 2
    assert skipped["state"] == "skipped" and skipped["attempts"] == []


def test_a_sweep_notifies_once_when_every_member_has_ended(
    fast_app: FastAPI, receiver: Receiver
) -> None:
    receiver.fail_first = 0
    with serving(fast_app) as (client, session):
        body = {"base": MLP, "grid": {"training.seed": [0, 1]}, "notify": {"url": receiver.url}}
        sweep = client.post("/api/v1/sweeps", json=body).json()
        first, second = (member["id"] for member in sweep["members"])
        end(session, first)
        assert passes_until_quiet(fast_app) == [] and receiver.received == []
        end(session, second, "diverged")
        assert passes_until_quiet(fast_app) == [["delivered"]]
        passes_until_quiet(fast_app)
        [delivery] = client.get(f"/api/v1/sweeps/{sweep['id']}/deliveries").json()["items"]
        assert client.get(f"{API}/{first}/deliveries").json()["items"] == []  # members have no notify of their own
    [received] = receiver.received
    event = received.event
    assert event["type"] == "sweep.ended" and event["sweep"]["id"] == sweep["id"]
    assert event["sweep"]["status_counts"] == {"succeeded": 1, "diverged": 1}
    assert {m["id"] for m in event["sweep"]["members"]} == {first, second}
    assert delivery["state"] == "delivered" and delivery["event_id"] == event["id"]


def test_a_receiver_that_never_answers_2xx_is_given_up(settings: Settings, receiver: Receiver) -> None:
    receiver.fail_first = 10**6
    app = create_app(settings.model_copy(update={"callback_retry_initial_s": 0.001, "callback_retry_for_s": 0.2}))
    with serving(app) as (client, session):
        created = client.post(API, json=MLP | {"notify": {"url": receiver.url}}).json()
        end(session, created["id"])
        deadline = time.monotonic() + 30
        while (state := client.get(f"{API}/{created['id']}/deliveries").json()["items"][0])["state"] != "failed":
            assert time.monotonic() < deadline, state
            deliver_once(app)
            time.sleep(0.02)
        assert deliver_once(app) == []  # given up: never sent again
    assert len(state["attempts"]) == len(receiver.received) >= 1
    assert all(a["status_code"] == 500 for a in state["attempts"]) and state["next_attempt_at"] is None
    assert "answered 500" in state["last_error"]
