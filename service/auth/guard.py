"""From a request's bearer token to the `Caller` it acts for, or a 401/403 that says why.

Cost per request: one SELECT by the token's hash (a unique-index probe), plus at most
one UPDATE of `last_used_at` per token per minute (service/store/tokens.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import HTTPException
from sqlalchemy.orm import Session

from service import store
from service.auth.tokens import TOKEN_PREFIX, Caller, Scope, hash_token
from service.config import Settings
from service.schemas.errors import ErrorResponse

# Owner names: what `token create --owner` and `?owner=` accept.
OWNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$"
CHALLENGE = {"WWW-Authenticate": "Bearer"}
HOW_TO_GET_ONE = (
    "create one with `gradwatch token create --owner NAME` on the server, and send it as "
    "`Authorization: Bearer <token>` (the CLI and client read GRADWATCH_TOKEN or "
    "$GRADWATCH_HOME/token)"
)

# Declared on every protected router, so the OpenAPI schema states them.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No bearer token, or an unknown or revoked one."},
    403: {"model": ErrorResponse, "description": "The token's scope does not allow this (a read token changing something)."},
}
LIMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorResponse,
        "description": "The owner would have more than max_active_per_owner experiments queued or running.",
    },
}


class AuthConfigError(RuntimeError):
    """The settings would expose an API without authentication."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(settings: Settings, host: str) -> None:
    """Refuse GRADWATCH_AUTH=off on anything but a loopback address."""
    if settings.auth == "off" and not is_loopback(host):
        raise AuthConfigError(
            f"GRADWATCH_AUTH=off, but the API would listen on {host}, which is not a loopback "
            "address: anyone who reaches it could read, cancel and delete every experiment. "
            "Bind 127.0.0.1 (--host 127.0.0.1 / GRADWATCH_API_HOST) or set GRADWATCH_AUTH=required "
            "and create tokens with `gradwatch token create`"
        )


def authenticate(session: Session, settings: Settings, token: str | None, method: str) -> Caller:
    """The caller `token` identifies, allowed to use `method`; else 401 or 403."""
    if settings.auth == "off":
        return Caller(owner=settings.local_owner, scope=Scope.admin, token_id=None)
    if not token:
        raise HTTPException(401, f"this route needs an API token: {HOW_TO_GET_ONE}", headers=CHALLENGE)
    if not token.startswith(TOKEN_PREFIX):
        raise HTTPException(
            401, f"the bearer token is not a gradwatch token (they start with {TOKEN_PREFIX!r}): {HOW_TO_GET_ONE}",
            headers=CHALLENGE,
        )  # fmt: skip
    record = store.find_active_token(session, hash_token(token))
    if record is None:
        raise HTTPException(
            401, f"the bearer token is unknown or was revoked: {HOW_TO_GET_ONE}", headers=CHALLENGE
        )
    store.touch_token(session, record)
    caller = Caller(owner=record.owner, scope=Scope(record.scope), token_id=record.id)
    if not caller.may(method):
        raise HTTPException(
            403,
            f"token {record.id} ({record.name!r} of {record.owner!r}) has scope 'read', which cannot "
            f"{method.upper()}: use a token with scope 'write' (gradwatch token create --owner "
            f"{record.owner} --scope write)",
        )
    return caller
