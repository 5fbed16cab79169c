"""Bad input gets a clear 4xx naming the problem: never a 500, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import Client

from service.config import Limits, Settings
from tests.service.api.conftest import MLP, api_client

API = "/api/v1/experiments"


def _post(client: Client, body: Any) -> Any:
    return client.post(API, json=body)


def test_malformed_json_is_400(client: Client) -> None:
    response = client.post(API, content=b'{"model": {"type": "mlp"},', headers={"content-type": "application/json"})
    assert response.status_code == 400
    body = response.json()
    assert "not valid JSON" in body["message"] and body == {"message": body["message"], "detail": body["message"], "error_id": None}


def test_empty_body_is_422(client: Client) -> None:
    response = client.post(API, content=b"", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "request body" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (MLP | {"colour": "red"}, "colour", "Extra inputs"),
        ({**MLP, "model": {"type": "mlp", "depth": 3}}, "model.depth", "Extra inputs"),
        ({**MLP, "training": {"steps": "many"}}, "training.steps", "valid integer"),
        ({**MLP, "training": {"steps": 2_000_000}}, "training.steps", "max_steps"),
        ({**MLP, "model": {"type": "mlp", "hidden_sizes": [5000]}}, "model.hidden_sizes.0", "max_width"),
        ({**MLP, "model": {"type": "transformer"}}, "model.type", "'mlp', 'rnn', 'lstm' or 'gru'"),
        ({**MLP, "training": {"lr": -1}}, "training.lr", "greater than 0"),
        ({**MLP, "dataset": {"name": "adding"}}, "dataset", "sequence task"),
        ([1, 2, 3], "request body", "valid dictionary"),
    ],
)  # fmt: skip
def test_invalid_specs_are_422_naming_the_field(client: Client, body: Any, field: str, words: str) -> None:
    response = _post(client, body)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith(f"{field}: ") and words in message, message
    assert "Traceback" not in response.text
    assert client.get(API).json()["total"] == 0  # nothing was stored


def test_request_over_the_size_limit_is_413(client: Client) -> None:
    big = MLP | {"name": "x" * 1_100_000}
    response = _post(client, big)
    assert response.status_code == 413 and "1000000 bytes" in response.json()["detail"]


def test_streamed_request_over_the_size_limit_is_413(client: Client) -> None:
    def chunks():
        for _ in range(20):
            yield b" " * 100_000

    response = client.post(API, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_limits_follow_the_apps_settings(settings: Settings) -> None:
    from service.api.main import create_app

    app = create_app(settings.model_copy(update={"limits": Limits(max_steps=100)}))
    with api_client(app) as client:
        response = _post(client, {**MLP, "training": {"steps": 101}})
    assert response.status_code == 422 and "above the limit 100" in response.json()["message"]


def test_unknown_id_is_404(client: Client) -> None:
    for method, path in [("GET", ""), ("POST", "/cancel"), ("DELETE", ""), ("GET", "/metrics"),
                         ("GET", "/series?metric=loss"), ("GET", "/timesteps")]:  # fmt: skip
        response = client.request(method, f"{API}/no-such-id{path}")
        assert response.status_code == 404, (method, path)
        assert "no-such-id" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"max_points": 0}, "max_points (query parameter): Input should be greater than or equal to 2"),
        ({"max_points": -5}, "greater than or equal to 2"),
        ({"max_points": "lots"}, "valid integer"),
        ({"max_points": 10_000_000}, "max_points (query parameter): 10000000 is above the limit"),
        ({"step_min": 10, "step_max": 5}, "step_min"),
        ({"agg": "median"}, "'minmax', 'mean', 'lttb' or 'none'"),
        ({"metric": ""}, "metric (query parameter)"),
    ],
)
def test_nonsensical_series_queries_are_422(client: Client, params: dict[str, Any], words: str) -> None:
    experiment_id = _post(client, MLP).json()["id"]
    response = client.get(f"{API}/{experiment_id}/series", params={"metric": "loss"} | params)
    assert response.status_code == 422, response.text
    assert words in response.json()["message"]


def test_missing_metric_is_422(client: Client) -> None:
    experiment_id = _post(client, MLP).json()["id"]
    response = client.get(f"{API}/{experiment_id}/series")
    assert response.status_code == 422 and "metric (query parameter): Field required" in response.text


def test_list_filters_are_validated(client: Client) -> None:
    response = client.get(API, params={"status": "sleeping", "limit": 0})
    assert response.status_code == 422
    message = response.json()["message"]
    assert "status (query parameter)" in message and "limit (query parameter)" in message


def test_unexpected_errors_are_a_500_with_an_error_id_the_log_shows(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    import httpx

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/api/v1/boom")

    import anyio

    with caplog.at_level(logging.ERROR, logger="gradwatch.api"):
        response = anyio.run(call)
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"message", "detail", "error_id"}
    error_id = body["error_id"]
    assert len(error_id) == 16 and error_id in body["message"]
    for secret in ("secret internals", "RuntimeError", "Traceback"):
        assert secret not in response.text
    (record,) = [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert error_id in record.getMessage() and "secret internals" in caplog.text  # the log keeps the cause


def test_chunked_body_over_the_limit_is_413_without_reaching_the_app() -> None:
    import anyio

    from service.api.errors import BodySizeLimitMiddleware

    reached = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(await receive())

    middleware = BodySizeLimitMiddleware(app, Limits(max_request_bytes=1000))
    messages = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 2
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(b"transfer-encoding", b"chunked")]}
    anyio.run(middleware, scope, receive, send)
    assert sent[0]["status"] == 413 and not reached


def test_the_client_shows_the_message_of_the_one_error_shape(client: Client) -> None:
    from service.client import GradwatchClient, GradwatchError

    token = client.headers["Authorization"].removeprefix("Bearer ")
    gw = GradwatchClient("http://testserver", transport=client._transport, token=token, retry_for=0)
    with pytest.raises(GradwatchError) as raised:
        gw.submit(MLP | {"training": {"steps": 2_000_000}})
    assert raised.value.status_code == 422 and raised.value.detail[0]["loc"] == ["body", "training", "steps"]
    assert "→ 422: training.steps: 2000000 is above the limit 1000000 (max_steps" in str(raised.value)
    with pytest.raises(GradwatchError, match="→ 404: no experiment with id 'nope'"):
        gw.get("nope")
