"""The Python client: the requests it sends, and the API's errors turned into
GradwatchError with the API's own message. The client against the real API, served by
uvicorn over a real socket, is in tests/e2e (test_client_against_the_api)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from service.client import GradwatchClient, GradwatchError


def recording_client(handler, retry_for: float = 0) -> tuple[GradwatchClient, list[httpx.Request]]:
    requests: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"})  # an API without the event stream
        return handler(request)

    client = GradwatchClient("http://gradwatch.test/", transport=httpx.MockTransport(transport), retry_for=retry_for)
    return client, requests


def test_submit_posts_the_spec_and_returns_the_experiment() -> None:
    client, requests = recording_client(lambda r: httpx.Response(201, json={"id": "abc", "status": "queued"}))
    spec = {"model": {"type": "mlp"}, "dataset": {"name": "digits"}}
    assert client.submit(spec) == {"id": "abc", "status": "queued"}
    (request,) = requests
    assert (request.method, str(request.url)) == ("POST", "http://gradwatch.test/api/v1/experiments")
    assert json.loads(request.content) == spec
    client.submit(spec)
    client.submit(spec, idempotency_key="etl/2026-12-01/3")
    keys = [r.headers["Idempotency-Key"] for r in requests]
    assert len(set(keys)) == 3 and keys[2] == "etl/2026-12-01/3"  # a new key per call unless given


def test_series_sends_repeated_layers_and_only_the_given_bounds() -> None:
    client, requests = recording_client(lambda r: httpx.Response(200, json={"metric": "grad_norm", "series": []}))
    client.series("abc", "grad_norm", layers=["layers.0.weight", "layers.2.weight"], step_max=99, max_points=500)
    query = requests[0].url.params
    assert requests[0].url.path == "/api/v1/experiments/abc/series"
    assert query.get_list("layer") == ["layers.0.weight", "layers.2.weight"]
    assert dict(query) | {"layer": None} == {"metric": "grad_norm", "layer": None, "step_max": "99", "max_points": "500"}
    client.series("abc", "loss", layers="layers.0")
    assert requests[1].url.params.get_list("layer") == ["layers.0"]


def test_list_leaves_out_filters_not_given() -> None:
    client, requests = recording_client(lambda r: httpx.Response(200, json={"items": [], "total": 0}))
    client.list(status="running", limit=5)
    assert dict(requests[0].url.params) == {"status": "running", "limit": "5"}


def test_validation_errors_name_the_field() -> None:
    detail = [{"loc": ["body", "training", "steps"], "msg": "Input should be less than or equal to 1000000", "type": "less_than_equal"}]
    client, _ = recording_client(lambda r: httpx.Response(422, json={"detail": detail}))
    with pytest.raises(GradwatchError) as raised:
        client.submit({"model": {"type": "mlp"}, "dataset": {"name": "digits"}, "training": {"steps": 10**9}})
    assert raised.value.status_code == 422
    assert raised.value.detail == detail
    assert "422: training.steps: Input should be less than or equal to 1000000" in str(raised.value)


def test_not_found_carries_the_api_message() -> None:
    client, _ = recording_client(lambda r: httpx.Response(404, json={"detail": "no experiment with id 'nope'"}))
    with pytest.raises(GradwatchError, match="404: no experiment with id 'nope'") as raised:
        client.get("nope")
    assert raised.value.status_code == 404


def test_a_non_json_error_keeps_its_text() -> None:
    client, _ = recording_client(lambda r: httpx.Response(502, text="Bad Gateway from the proxy"))
    with pytest.raises(GradwatchError, match="502: Bad Gateway from the proxy"):
        client.health()


def test_an_unreachable_api_says_where_it_looked() -> None:
    with GradwatchClient("http://127.0.0.1:9", timeout=2, retry_for=0) as client:  # the discard port: refused
        with pytest.raises(GradwatchError, match=r"cannot reach the gradwatch API at http://127.0.0.1:9") as raised:
            client.health()
    assert raised.value.status_code is None


def test_delete_returns_none_on_204() -> None:
    client, requests = recording_client(lambda r: httpx.Response(204))
    assert client.delete("abc") is None
    assert requests[0].method == "DELETE"


def test_wait_polls_until_a_terminal_status() -> None:
    states = iter(["queued", "running", "running", "diverged"])
    client, requests = recording_client(lambda r: httpx.Response(200, json={"id": "abc", "status": next(states)}))
    seen: list[str] = []
    final = client.wait("abc", timeout=10, poll=0.001, on_update=lambda e: seen.append(e["status"]))
    assert final["status"] == "diverged"
    assert seen == ["queued", "running", "running", "diverged"]
    assert [r.url.path for r in requests] == ["/api/v1/experiments/abc/events"] + ["/api/v1/experiments/abc"] * 4


def test_wait_gives_up_after_its_timeout() -> None:
    client, _ = recording_client(lambda r: httpx.Response(200, json={"id": "abc", "status": "running"}))
    with pytest.raises(TimeoutError, match="still running after 0.2 s"):
        client.wait("abc", timeout=0.2, poll=0.05)


def test_wait_gives_up_after_its_timeout_while_the_stream_keeps_sending() -> None:
    """A run that keeps progressing sends an event every flush: the timeout still holds."""

    def events():
        for step in range(10_000):  # ~8 minutes of a run that never ends, unless cut off
            time.sleep(0.05)
            state = {"id": "abc", "status": "running", "progress": {"step": step, "total": 10**6}}
            yield b"event: experiment\ndata: " + json.dumps(state).encode() + b"\n\n"

    def transport(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events())
        return httpx.Response(200, json={"id": "abc", "status": "running"})

    client = GradwatchClient("http://gradwatch.test/", transport=httpx.MockTransport(transport))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="still running after 0.5 s"):
        client.wait("abc", timeout=0.5, poll=0.05)
    assert time.monotonic() - started < 5
