"""How the client rides out a flaky API: which answers it retries, with which key, for
how long, and how it reads an event stream. The client against a real API stopped in
the middle of a submit is tests/e2e/test_pipelines.py."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from service.client import GradwatchClient, GradwatchError
from service.client_retry import RetryPolicy, retry_after_s, sse_data

SPEC = {"model": {"type": "mlp"}, "dataset": {"name": "digits"}}


def scripted(*answers, retry_for: float = 30.0) -> tuple[GradwatchClient, list[httpx.Request]]:
    """A client whose transport gives `answers` in turn (a Response, or an exception to raise)."""
    requests: list[httpx.Request] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        answer = pending.pop(0) if len(pending) > 1 else pending[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = GradwatchClient("http://gradwatch.test", transport=httpx.MockTransport(handle), retry_for=retry_for)
    client.retry = RetryPolicy(retry_for=retry_for, base_s=0.001, cap_s=0.01)  # no real waiting here
    return client, requests


def test_a_submit_retried_through_503s_and_dropped_connections_keeps_its_key() -> None:
    client, requests = scripted(
        httpx.ConnectError("connection refused"),
        httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "database unreachable"}),
        httpx.ReadTimeout("timed out"),
        httpx.Response(502, text="Bad Gateway"),
        httpx.Response(200, json={"id": "abc", "status": "queued"}, headers={"Idempotent-Replayed": "true"}),
    )
    assert client.submit(SPEC)["id"] == "abc"
    assert len(requests) == 5
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    assert all(json.loads(r.content) == SPEC for r in requests)


def test_it_gives_up_after_retry_for_with_the_last_answer() -> None:
    client, requests = scripted(httpx.Response(504, json={"detail": "gateway timeout"}), retry_for=0.2)
    with pytest.raises(GradwatchError, match="504: gateway timeout") as raised:
        client.get("abc")
    assert raised.value.status_code == 504 and len(requests) >= 2
    client, requests = scripted(httpx.ConnectError("refused"), retry_for=0.2)
    with pytest.raises(GradwatchError, match=r"after \d+ tries in 0.2 s \(ConnectError: refused\)"):
        client.get("abc")
    assert len(requests) >= 2


def test_a_retry_after_beyond_the_budget_is_not_waited_for() -> None:
    client, requests = scripted(httpx.Response(503, headers={"Retry-After": "3600"}, json={"detail": "maintenance"}))
    with pytest.raises(GradwatchError, match="503: maintenance"):
        client.get("abc")
    assert len(requests) == 1


def test_only_transient_answers_are_retried() -> None:
    for status in (400, 404, 409, 422, 500):
        client, requests = scripted(httpx.Response(status, json={"detail": "no"}))
        with pytest.raises(GradwatchError):
            client.get("abc")
        assert len(requests) == 1, status
    at_limit, requests = scripted(httpx.Response(429, json={"detail": "at the active limit"}))
    with pytest.raises(GradwatchError, match="429"):
        at_limit.submit(SPEC)
    assert len(requests) == 1  # no Retry-After: waiting would not help
    throttled, requests = scripted(httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(201, json={"id": "x"}))
    assert throttled.submit(SPEC) == {"id": "x"} and len(requests) == 2


def test_a_delete_whose_answer_was_lost_is_done() -> None:
    client, requests = scripted(httpx.ReadTimeout("timed out"), httpx.Response(404, json={"detail": "no experiment"}))
    assert client.delete("abc") is None and len(requests) == 2
    for first in (httpx.Response(503), httpx.ConnectError("refused")):  # the first try never reached it
        client, _ = scripted(first, httpx.Response(404, json={"detail": "no experiment with id 'abc'"}))
        with pytest.raises(GradwatchError, match="404"):
            client.delete("abc")  # never there: still an error


def test_backoff_grows_with_jitter_and_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=10.0)
    draws = [policy.delay_s(attempt) for attempt in range(1, 9) for _ in range(50)]
    assert all(0 <= d <= 10 for d in draws) and max(draws) > 5  # grows to the cap
    assert max(policy.delay_s(1) for _ in range(50)) <= 0.5
    assert len({round(d, 6) for d in draws}) > 300  # jitter: no two pipelines wait the same
    assert all(policy.delay_s(1, retry_after=3.0) >= 3.0 for _ in range(20))


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "7"})) == 7.0
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": date}), now=now) == 30.0
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert retry_after_s(httpx.Response(503)) is None


def test_event_stream_parsing() -> None:
    lines = [": keep-alive", "", "event: progress", 'data: {"step": 5}', "", "data: line one", "data: line two", "", "data: {\"cut\""]
    assert list(sse_data(lines)) == [{"step": 5}, "line one\nline two", '{"cut"']


def test_wait_follows_the_event_stream() -> None:
    running = {"id": "abc", "status": "running", "progress": {"step": 1, "total": 3}}
    done = {"id": "abc", "status": "succeeded", "progress": {"step": 3, "total": 3}, "spec": {}}
    stream = f"data: {json.dumps(running)}\n\nevent: progress\ndata: {{\"step\": 2}}\n\ndata: {json.dumps(done)}\n\n"
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path.endswith("/events"):
            return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=stream.encode())
        return httpx.Response(200, json=running | {"progress": {"step": 2, "total": 3}})

    client = GradwatchClient("http://gradwatch.test", transport=httpx.MockTransport(handle))
    seen: list[tuple[str, int]] = []
    final = client.wait("abc", timeout=10, on_update=lambda e: seen.append((e["status"], e["progress"]["step"])))
    assert final == done
    assert seen == [("running", 1), ("running", 2), ("succeeded", 3)]  # a partial event is looked up
    assert [r.url.path for r in requests] == ["/api/v1/experiments/abc/events", "/api/v1/experiments/abc"]


def test_wait_gives_up_after_its_timeout_while_the_stream_keeps_talking() -> None:
    running = {"id": "abc", "status": "running", "progress": {"step": 1, "total": 3}}

    def events():
        while True:  # a run that never ends, reporting progress all the time
            yield f"data: {json.dumps(running)}\n\n".encode()
            time.sleep(0.01)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=events())
        return httpx.Response(200, json=running)

    client = GradwatchClient("http://gradwatch.test", transport=httpx.MockTransport(handle))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.wait("abc", timeout=0.5, poll=0.05)
    assert time.monotonic() - started < 3
