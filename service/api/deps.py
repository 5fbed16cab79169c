"""Dependencies the routes declare: `SessionDep`, `SettingsDep`, `EnqueuerDep`, and who
the request acts for: `CurrentToken` (the `Caller`) and `CurrentOwner` (whose rows it
may see; None for an admin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.auth.guard import authenticate
from service.auth.session import SESSION_COOKIE, check_browser_write
from service.auth.tokens import Caller
from service.config import Settings
from service.queue import Enqueuer

# Declares the bearer scheme in OpenAPI; auto_error=False so that a missing header is
# our own 401 with a message, not FastAPI's bare 403.
bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `gradwatch token create` (or $GRADWATCH_HOME/token after `gradwatch up`).",
)


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in
# the thread pool, a hand-off to a thread and back (with its share of the GIL and of the
# pool's 40 tokens) for an attribute read.


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request's sync route and dependencies (which run in the thread
    pool, one after another, never at once).

    Opening a session does no I/O, and neither does closing one whose work was committed
    (the store's functions commit, which hands the connection back to the pool): both
    happen here, on the event loop, saving the two thread-pool hand-offs a `def`
    generator costs (≈ 0.1 ms of CPU each on the development machine). A session still in
    a transaction (a route that raised half-way) must roll back on its connection, a round
    trip that could hang with the database: that close runs in the thread pool."""
    session = request.app.state.session_factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_enqueuer(request: Request) -> Enqueuer:
    return request.app.state.enqueuer


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]


def get_caller(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """Every protected router depends on this (FastAPI runs it once per request).

    The bearer header wins; without one, the dashboard's session cookie stands in for it,
    and a request it carries that changes anything must pass the CSRF check
    (service/auth/session.py), as must any browser's while authentication is off."""
    if credentials is not None:
        return authenticate(session, settings, credentials.credentials, request.method)
    cookie = request.cookies.get(SESSION_COOKIE) if settings.auth != "off" else None
    caller = authenticate(session, settings, cookie, request.method)
    check_browser_write(request, cookie)
    return caller


CurrentToken = Annotated[Caller, Depends(get_caller)]


async def get_owner(caller: CurrentToken) -> str | None:
    return caller.sees


CurrentOwner = Annotated[str | None, Depends(get_owner)]
