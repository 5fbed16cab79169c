"""An API app per test, on each database, with the real embedded broker in tmp_path."""

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
from service.config import Settings
from service.queue import broker_folders


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # reaper_interval_s=0: the reaper is tested on its own in test_main.py.
    return Settings(home=tmp_path / "home", database_url=database_url, broker_url="", reaper_interval_s=0)


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


@contextlib.contextmanager
def api_client(app: FastAPI) -> Iterator[httpx.Client]:
    """An httpx client of `app`, with the app's lifespan (the reaper) running."""
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
            transport = _PortalTransport(app, portal)
            with httpx.Client(transport=transport, base_url="http://testserver") as client:
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
def api_headers() -> dict[str, str]:
    """Headers for requests made around the `client` fixture (schemathesis's): none while
    the API takes no token; the bearer token of the test's owner once it requires one."""
    return {}


def queued_messages(settings: Settings) -> list[Path]:
    folder = broker_folders(settings)["queue"]
    return sorted(folder.iterdir()) if folder.exists() else []


MLP = {"name": "sigmoid-2x30", "tags": ["seed"], "model": {"type": "mlp", "activation": "sigmoid"}, "dataset": {"name": "mnist"}}
LSTM = {"model": {"type": "lstm"}, "dataset": {"name": "adding"}, "device": "cuda"}
