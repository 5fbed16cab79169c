"""An API app per test, on each database, with the real embedded broker in tmp_path.

Every client carries a real token from the app's database: `client` one of TEST_OWNER
with scope `write`; `bearer(app, owner, scope)` makes the headers of any other owner or
scope (`client.get(url, headers=bearer(app, "bob", "read"))`). Rows a test writes through
the store for `client` to read need `owner=TEST_OWNER` (or an admin's headers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from service.api.main import create_app
from service.auth.tokens import issue_token
from service.config import Settings
from service.queue import broker_folders


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # reaper_interval_s=0: the reaper is tested on its own in test_main.py; callback_poll_s=0:
    # the callback tests run the delivery loop's passes themselves. events_max_stream_s=1:
    # the walks over every route read a queued experiment's event stream to its end.
    return Settings(
        home=tmp_path / "home", database_url=database_url, broker_url="", reaper_interval_s=0, callback_poll_s=0,
        events_max_stream_s=1,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


class _PortalTransport(httpx.BaseTransport):
    """Synchronous httpx over `httpx.ASGITransport`, the app running on an event loop in
    a portal thread (starlette's TestClient, minus its deprecated httpx coupling)."""

    def __init__(self, app: FastAPI, portal: anyio.from_thread.BlockingPortal) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> httpx.Response:
            replay = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self._asgi.handle_async_request(replay)
            content = await response.aread()
            return httpx.Response(
                response.status_code, headers=response.headers, content=content, request=request
            )

        return self._portal.call(send)


TEST_OWNER = "tester"


def make_token(app: FastAPI, owner: str = TEST_OWNER, scope: str = "write", name: str = "test") -> str:
    """A new token in the app's database, as `gradwatch token create` makes one."""
    with app.state.session_factory() as session:
        return issue_token(session, owner, scope, name)


def bearer(app: FastAPI, owner: str = TEST_OWNER, scope: str = "write") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(app, owner, scope)}"}


@contextlib.contextmanager
def api_client(app: FastAPI, owner: str | None = TEST_OWNER, scope: str = "write") -> Iterator[httpx.Client]:
    """An httpx client of `app`, with the app's lifespan (the reaper) running, sending a
    token of `owner` with `scope` (owner None: no token at all)."""
    headers = {} if owner is None else bearer(app, owner, scope)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
            transport = _PortalTransport(app, portal)
            with httpx.Client(transport=transport, base_url="http://testserver", headers=headers) as client:
                yield client


@pytest.fixture
def client(app: FastAPI) -> Iterator[httpx.Client]:
    with api_client(app) as client:
        yield client


@pytest.fixture
def api_session(app: FastAPI) -> Iterator[Session]:
    """A session on the app's own database, to write data as a worker would."""
    with app.state.session_factory() as session:
        yield session


@pytest.fixture
def api_headers(app: FastAPI) -> dict[str, str]:
    """Headers for requests made around the `client` fixture (schemathesis's): a write
    token of the test's owner, so that requests reach the routes rather than a 401."""
    return bearer(app, TEST_OWNER, "write")


def queued_messages(settings: Settings) -> list[Path]:
    folder = broker_folders(settings)["queue"]
    return sorted(folder.iterdir()) if folder.exists() else []


MLP = {"name": "sigmoid-2x30", "tags": ["seed"], "model": {"type": "mlp", "activation": "sigmoid"}, "dataset": {"name": "mnist"}}
LSTM = {"model": {"type": "lstm"}, "dataset": {"name": "adding"}, "device": "cuda"}
