"""Tokens on every route: 401 without a valid one, 403 for a read token changing
something, the bearer scheme and 401/403/429 in the OpenAPI schema, cross-site requests
changing nothing, GRADWATCH_AUTH=off only on loopback, and last-used kept per minute."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from service.api.main import create_app
from service.auth.guard import AuthConfigError
from service.config import Settings
from service.db.models import ApiToken
from tests.service.api.conftest import MLP, TEST_OWNER, api_client, bearer, make_token

API = "/api/v1/experiments"
TINY = {**MLP, "dataset": {"name": "digits"}, "training": {"steps": 10}}


def _operations(app: FastAPI) -> list[tuple[str, str, dict]]:
    """(method, concrete path, operation) for every route of the schema but /health."""
    found = []
    for path, methods in app.openapi()["paths"].items():
        for method, operation in methods.items():
            if path != "/api/v1/health":
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "0" * 32, path), operation))
    return found


def test_every_route_but_health_needs_a_token(app: FastAPI) -> None:
    operations = _operations(app)
    assert len(operations) >= 20  # the walk found the API, not an empty schema
    with api_client(app, owner=None) as anonymous:
        assert anonymous.get("/api/v1/health").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        for method, path, _ in operations:
            for headers in ({}, {"Authorization": "Bearer gw_not-a-real-token"}, {"Authorization": "Basic YTpi"}):
                response = anonymous.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "gradwatch token create" in response.json()["detail"]


def test_the_schema_declares_the_bearer_scheme_and_every_auth_status(app: FastAPI) -> None:
    schema = app.openapi()
    (scheme,) = schema["components"]["securitySchemes"].values()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for method, path, operation in _operations(app):
        assert operation.get("security"), (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
    for path in ("/api/v1/experiments", "/api/v1/sweeps"):
        assert "429" in schema["paths"][path]["post"]["responses"]
    assert "security" not in schema["paths"]["/api/v1/health"]["get"]


def test_a_read_token_reads_but_cannot_change_anything(app: FastAPI, client: httpx.Client) -> None:
    created = client.post(API, json=TINY).json()
    reader = bearer(app, TEST_OWNER, "read")
    assert client.get(f"{API}/{created['id']}", headers=reader).status_code == 200
    assert client.get(API, headers=reader).json()["total"] == 1
    for method, path, body in (
        ("POST", API, TINY),
        ("POST", f"{API}/{created['id']}/cancel", None),
        ("DELETE", f"{API}/{created['id']}", None),
        ("POST", "/api/v1/sweeps", {"base": TINY, "grid": {"training.seed": [0, 1]}}),
    ):
        response = client.request(method, path, json=body, headers=reader)
        assert response.status_code == 403, (method, path, response.text)
        assert "scope 'read'" in response.json()["detail"] and "--scope write" in response.json()["detail"]
    assert client.get(API).json()["total"] == 1
    assert client.get(f"{API}/{created['id']}").json()["status"] == "queued"


def test_a_cross_site_cancel_without_the_bearer_header_changes_nothing(app: FastAPI, client: httpx.Client) -> None:
    created = client.post(API, json=TINY).json()
    # What a form or fetch() on any web page can send without a CORS preflight: no
    # Authorization header (a browser never adds one by itself), text/plain, a foreign Origin.
    with api_client(app, owner=None) as browser:
        response = browser.post(
            f"{API}/{created['id']}/cancel",
            content=b"",
            headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
        )
    assert response.status_code == 401
    assert "access-control-allow-origin" not in response.headers  # CORS stays closed
    after = client.get(f"{API}/{created['id']}").json()
    assert after["status"] == "queued" and after["cancel_requested"] is False


def test_cors_opens_only_to_the_configured_origins(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": "https://lab.example"}))
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with api_client(app, owner=None) as browser:
        allowed = browser.options(API, headers={"Origin": "https://lab.example", **preflight})
        foreign = browser.options(API, headers={"Origin": "https://evil.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://lab.example"
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in foreign.headers


def test_auth_off_is_refused_off_loopback_and_makes_everyone_a_local_admin(settings: Settings) -> None:
    with pytest.raises(AuthConfigError, match="0.0.0.0, which is not a loopback address"):
        create_app(settings.model_copy(update={"auth": "off", "api_host": "0.0.0.0"}))
    app = create_app(settings.model_copy(update={"auth": "off", "api_host": "127.0.0.1"}))
    with api_client(app, owner=None) as anonymous:
        created = anonymous.post(API, json=TINY)
        assert created.status_code == 201, created.text
        assert created.json()["owner"] == "local"
        assert anonymous.get(API).json()["total"] == 1


def test_last_used_is_written_at_most_once_a_minute(app: FastAPI) -> None:
    token = make_token(app, "alice", "read")
    headers = {"Authorization": f"Bearer {token}"}

    def last_used() -> datetime | None:
        with app.state.session_factory() as session:
            return session.execute(sa.select(ApiToken.last_used_at).where(ApiToken.owner == "alice")).scalar_one()

    with api_client(app, owner=None) as anonymous:
        assert last_used() is None
        assert anonymous.get(API, headers=headers).status_code == 200
        first = last_used()
        assert first is not None
        assert anonymous.get(API, headers=headers).status_code == 200
        assert last_used() == first  # the second request within the minute wrote nothing
        with app.state.session_factory() as session:
            session.execute(sa.update(ApiToken).values(last_used_at=first - timedelta(minutes=2)))
            session.commit()
        assert anonymous.get(API, headers=headers).status_code == 200
        assert last_used() > first


def test_a_request_costs_one_token_lookup_and_no_write(app: FastAPI, client: httpx.Client) -> None:
    created = client.post(API, json=TINY).json()  # also the token's first use: last_used_at written
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001, PLR0913
        statements.append(" ".join(statement.split()))

    sa.event.listen(app.state.engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            assert client.get(f"{API}/{created['id']}").status_code == 200
    finally:
        sa.event.remove(app.state.engine, "before_cursor_execute", record)
    on_tokens = [statement for statement in statements if "api_tokens" in statement]
    assert len(on_tokens) == 3, on_tokens  # one per request
    assert all(statement.startswith("SELECT") and "token_hash" in statement for statement in on_tokens), on_tokens
