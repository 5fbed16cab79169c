"""/api/v1/health answers 200 only when the database and the broker both answer."""

from __future__ import annotations

import contextlib
import subprocess
import time

import pytest
import redis
from httpx import Client

from service.api.main import create_app
from service.config import Settings
from tests.service.api.conftest import api_client

HEALTH = "/api/v1/health"


def test_healthy_with_the_embedded_broker(client: Client) -> None:
    response = client.get(HEALTH)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "message": ""}


def test_healthy_with_redis(settings: Settings, redis_url: str) -> None:
    with api_client(create_app(settings.model_copy(update={"broker_url": redis_url}))) as client:
        assert client.get(HEALTH).json()["broker"] == "ok"


def test_503_names_what_is_down_never_where_it_lives(settings: Settings) -> None:
    down = settings.model_copy(
        update={"broker_url": "redis://127.0.0.1:1/0", "database_url": "postgresql+psycopg://root@127.0.0.1:1/x"}
    )
    down.__dict__.pop("resolved_database_url", None)  # a cached_property of the copy's source
    with api_client(create_app(down), owner=None) as client:  # /health needs no token
        response = client.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "unavailable" and body["broker"] == "unavailable"
    assert "the database and the broker are unavailable" in body["message"]
    for where in ("127.0.0.1", ":1", "root", "psycopg", "redis://", "OperationalError", "ConnectionError"):
        assert where not in response.text, where


def _closed_port() -> int:
    from tests.e2e.stack import free_port

    return free_port()  # bound and released: nothing listens there


@pytest.mark.parametrize(("down_part", "up_part"), [("broker", "database"), ("database", "broker")])
def test_503_when_only_one_of_database_and_broker_is_down(settings: Settings, down_part: str, up_part: str) -> None:
    port = _closed_port()
    if down_part == "broker":
        down = settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"})
    else:
        down = settings.model_copy(update={"database_url": f"postgresql+psycopg://root@127.0.0.1:{port}/x"})
        down.__dict__.pop("resolved_database_url", None)  # a cached_property of the copy's source
    with api_client(create_app(down), owner=None) as client:  # /health needs no token
        response = client.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body[up_part], body[down_part]) == ("unavailable", "ok", "unavailable"), body
    assert body["message"].startswith(f"the {down_part} is unavailable"), body


def _redis_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.ConnectionError):
            if redis.Redis(port=port).ping():
                return server
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"redis-server on port {port} did not start")


def test_health_keeps_one_redis_connection_and_follows_a_restart(settings: Settings) -> None:
    """A Redis of this test's own: twenty checks open one connection between them; with
    Redis stopped the broker is reported down, and once it is back the next check is ok."""
    port = _closed_port()
    server = _redis_server(port)
    try:
        app = create_app(settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"}))
        with api_client(app, owner=None) as client:
            assert client.get(HEALTH).json()["broker"] == "ok"
            opened = redis.Redis(port=port).info("stats")["total_connections_received"]
            for _ in range(20):
                assert client.get(HEALTH).json()["broker"] == "ok"
            # Only the INFO call's own connection is new.
            assert redis.Redis(port=port).info("stats")["total_connections_received"] == opened + 1
            server.terminate()
            server.wait(timeout=10)
            response = client.get(HEALTH)
            assert (response.status_code, response.json()["broker"]) == (503, "unavailable")
            server = _redis_server(port)
            assert client.get(HEALTH).json() == {"status": "ok", "database": "ok", "broker": "ok", "message": ""}
    finally:
        server.kill()
        server.wait(timeout=10)
