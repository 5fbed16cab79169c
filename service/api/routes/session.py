"""/api/v1/session: the dashboard's login. A bearer token in, an HttpOnly SameSite=Strict
session cookie out (service/auth/session.py says why and how the CSRF check works)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from service import store
from service.api.deps import CurrentToken, SessionDep, SettingsDep
from service.auth.session import SESSION_COOKIE, SESSION_TOKEN_NAME, csrf_token
from service.auth.tokens import issue_token

router = APIRouter(prefix="/api/v1/session", tags=["session"])


class SessionPublic(BaseModel):
    auth: Literal["required", "off"]
    owner: str
    scope: Literal["read", "write", "admin"]
    csrf_token: str | None = Field(
        description="Send as X-CSRF-Token with every change made with the session cookie; null without one."
    )


def _cookie_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


@router.get("", response_model=SessionPublic)
def read_session(request: Request, caller: CurrentToken, settings: SettingsDep) -> SessionPublic:
    """Who the request acts for, and the CSRF value of its session cookie."""
    cookie = _cookie_token(request) if settings.auth != "off" and "authorization" not in request.headers else None
    return SessionPublic(
        auth=settings.auth, owner=caller.owner, scope=caller.scope.value, csrf_token=cookie and csrf_token(cookie)
    )


@router.post("", response_model=SessionPublic, status_code=status.HTTP_201_CREATED)
def log_in(
    request: Request, response: Response, caller: CurrentToken, session: SessionDep, settings: SettingsDep
) -> SessionPublic:
    """Log in with `Authorization: Bearer <token>`: a new session token of the same owner
    and scope goes into the `gw_session` cookie (HttpOnly, SameSite=Strict)."""
    if settings.auth == "off":
        return SessionPublic(auth="off", owner=caller.owner, scope=caller.scope.value, csrf_token=None)
    if "authorization" not in request.headers:
        raise HTTPException(401, "log in with an API token in the Authorization header, not a session cookie")
    token = issue_token(session, caller.owner, caller.scope, SESSION_TOKEN_NAME)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=settings.session_max_age_s, path="/",
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip
    return SessionPublic(auth="required", owner=caller.owner, scope=caller.scope.value, csrf_token=csrf_token(token))


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def log_out(request: Request, caller: CurrentToken, session: SessionDep) -> Response:
    """End the session: its token is revoked and the cookie cleared."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if caller.token_id is not None and "authorization" not in request.headers and _cookie_token(request):
        store.revoke_token(session, caller.token_id)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
