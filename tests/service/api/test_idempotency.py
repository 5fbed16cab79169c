"""`Idempotency-Key` on POST /experiments and POST /sweeps, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from fastapi import FastAPI
from httpx import Client
from sqlalchemy.orm import Session

from service.api.main import create_app
from service.config import Settings
from service.db.models import Experiment, IdempotencyKey, Sweep
from tests.service.api.conftest import MLP, api_client, bearer, queued_messages

API = "/api/v1/experiments"
SWEEP = {"base": MLP, "grid": {"training.seed": [0, 1]}}


def count(session: Session, table: type) -> int:
    session.commit()  # see what other connections committed
    return session.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_the_same_post_twice_creates_and_enqueues_once(
    client: Client, settings: Settings, api_session: Session
) -> None:
    first = client.post(API, json=MLP, headers={"Idempotency-Key": "run-2026-12-01"})
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = client.post(API, json=MLP, headers={"Idempotency-Key": "run-2026-12-01"})
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == f"{API}/{first.json()['id']}"
    assert count(api_session, Experiment) == 1
    assert len(queued_messages(settings)) == 1
    # A body that means the same experiment (its defaults spelled out) is the same request.
    spelled_out = MLP | {"device": "auto", "training": {"steps": 1000}}
    assert client.post(API, json=spelled_out, headers={"Idempotency-Key": "run-2026-12-01"}).status_code == 200
    # Without a key, or with another, every POST creates.
    assert client.post(API, json=MLP).status_code == 201
    assert client.post(API, json=MLP, headers={"Idempotency-Key": "run-2026-12-02"}).status_code == 201
    assert count(api_session, Experiment) == 3
    assert len(queued_messages(settings)) == 3


def test_one_broker_message_on_real_redis(settings: Settings, redis_url: str) -> None:
    import redis

    app = create_app(settings.model_copy(update={"broker_url": redis_url}))
    with api_client(app) as client:
        ids = {client.post(API, json=MLP, headers={"Idempotency-Key": "k"}).json()["id"] for _ in range(3)}
    assert len(ids) == 1
    with redis.Redis.from_url(redis_url) as connection:
        assert connection.llen("cpu") == 1


def test_twenty_concurrent_requests_with_one_key_create_one(
    client: Client, settings: Settings, api_session: Session
) -> None:
    def post(_: int):
        return client.post(API, json=MLP, headers={"Idempotency-Key": "burst"})

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert count(api_session, Experiment) == 1
    assert len(queued_messages(settings)) == 1


def test_a_different_body_with_the_key_is_refused(client: Client, api_session: Session) -> None:
    created = client.post(API, json=MLP, headers={"Idempotency-Key": "k1"}).json()
    other = client.post(API, json=MLP | {"name": "other"}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert "different request body" in other.json()["message"] and created["id"] in other.json()["message"]
    on_sweeps = client.post("/api/v1/sweeps", json=SWEEP, headers={"Idempotency-Key": "k1"})
    assert on_sweeps.status_code == 422 and "to create a experiment" in on_sweeps.json()["message"]
    assert count(api_session, Experiment) == 1 and count(api_session, Sweep) == 0


def test_an_expired_key_creates_anew(client: Client, settings: Settings, api_session: Session) -> None:
    first = client.post(API, json=MLP, headers={"Idempotency-Key": "nightly"}).json()
    key = api_session.execute(sa.select(IdempotencyKey)).scalar_one()
    assert (key.expires_at - key.created_at).total_seconds() == settings.idempotency_ttl_s == 86400
    # Time passes: the key's expiry is now behind us.
    api_session.execute(sa.update(IdempotencyKey).values(expires_at=key.created_at))
    api_session.commit()
    second = client.post(API, json=MLP, headers={"Idempotency-Key": "nightly"})
    assert second.status_code == 201 and second.json()["id"] != first["id"]
    assert client.post(API, json=MLP, headers={"Idempotency-Key": "nightly"}).json()["id"] == second.json()["id"]
    assert count(api_session, Experiment) == 2 and count(api_session, IdempotencyKey) == 1


def test_keys_belong_to_their_owner(app: FastAPI, client: Client, api_session: Session) -> None:
    mine = client.post(API, json=MLP, headers={"Idempotency-Key": "shared"}).json()
    theirs = client.post(API, json=MLP, headers={"Idempotency-Key": "shared", **bearer(app, "bob")})
    assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"] and theirs.json()["owner"] == "bob"


def test_a_malformed_key_is_refused(client: Client, api_session: Session) -> None:
    for key in ("has space", "x" * 256):
        response = client.post(API, json=MLP, headers={"Idempotency-Key": key})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert count(api_session, Experiment) == 0
    schema = client.get("/openapi.json").json()
    [header] = [p for p in schema["paths"][API]["post"]["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header" and header["schema"]["anyOf"][0]["maxLength"] == 255


def test_the_same_sweep_twice_creates_one(client: Client, settings: Settings, api_session: Session) -> None:
    first = client.post("/api/v1/sweeps", json=SWEEP, headers={"Idempotency-Key": "grid-1"})
    again = client.post("/api/v1/sweeps", json=SWEEP, headers={"Idempotency-Key": "grid-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["idempotent-replayed"] == "true" and again.json()["id"] == first.json()["id"]
    assert [m["id"] for m in again.json()["members"]] == [m["id"] for m in first.json()["members"]]
    assert count(api_session, Sweep) == 1 and count(api_session, Experiment) == 2
    assert len(queued_messages(settings)) == 2
