"""Every error the API returns is JSON of one shape (service/schemas/errors.py) a user can
act on; never a stack trace, never an exception's type or message.

- invalid input → 422, `message` joining every problem (field first), `detail` listing them;
- a body that is not JSON → 400 with the parser's complaint and where it stopped;
- a body over `limits.max_request_bytes` → 413 (see `BodySizeLimitMiddleware`);
- an unknown experiment → 404; an owner at max_active_per_owner → 429 with the numbers;
  no or a bad token → 401 (service/auth/guard.py); any other HTTPException → its status,
  same shape;
- the database unreachable (connection refused or lost, pool exhausted) → 503 with
  `Retry-After`: the request can be repeated once it is back;
- anything unexpected → 500 with an `error_id`; the traceback goes to the server log under
  that id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy.exc as sa_exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Limits
from service.schemas.limits import using_limits
from service.store.records import ActiveLimitExceeded, ExperimentNotFound

log = logging.getLogger("gradwatch.api")

# Where a parameter came from, as FastAPI puts it first in `loc`.
_SOURCES = {"body", "query", "path", "header", "cookie"}


def error_body(message: str, detail: str | list[dict[str, Any]] | None = None, error_id: str | None = None) -> dict[str, Any]:
    """The one error shape: see service/schemas/errors.py."""
    return {"message": message, "detail": message if detail is None else detail, "error_id": error_id}


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status_code, content=error_body(message, **extra), headers=headers)


def field_name(loc: Sequence[Any]) -> str:
    """('body', 'model', 'hidden_sizes', 0) → 'model.hidden_sizes.0';
    ('query', 'max_points') → 'max_points (query parameter)'."""
    parts = list(loc)
    source = parts.pop(0) if parts and parts[0] in _SOURCES else None
    name = ".".join(str(part) for part in parts)
    if source in (None, "body"):
        return name or "request body"
    return f"{name} ({source} parameter)"


def validation_problems(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    # Drop `input` (it may echo a megabyte of request) and `ctx` (it may hold exceptions).
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in errors
    ]


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            loc = error.get("loc", ())
            position = loc[1] if len(loc) > 1 else None
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            where = f" at character {position}" if position is not None else ""
            return error_response(400, f"the request body is not valid JSON: {reason}{where}")
    problems = validation_problems(errors)
    message = "; ".join(f"{field_name(p['loc'])}: {p['msg']}" for p in problems)
    return error_response(422, message, detail=problems)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        # Starlette names only the first route matching the path; a path served by
        # several routes (GET and POST /experiments) allows all of theirs.
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed on {request.url.path}; it allows {', '.join(allowed)}"
    return error_response(exc.status_code, message, headers=headers or None)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        path_regex = getattr(route, "path_regex", None)
        if path_regex is not None and path_regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _not_found(request: Request, exc: ExperimentNotFound) -> JSONResponse:
    return error_response(404, str(exc))


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached now (as opposed to a bad query):
    a refused or lost connection (OperationalError, InterfaceError, or any DBAPIError
    that invalidated its connection) or no free connection in the pool (TimeoutError)."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def _database_error(retry_after_s: int) -> Any:
    async def handle(request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        if not database_unreachable(exc):
            return await _unexpected(request, exc)
        log.warning(
            "database unreachable on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc
        )
        return error_response(
            503,
            f"the database is unreachable; nothing was changed by this request: retry in {retry_after_s} s "
            "(GET /api/v1/health says which dependency is down)",
            headers={"Retry-After": str(retry_after_s)},
        )

    return handle


async def _over_limit(request: Request, exc: ActiveLimitExceeded) -> JSONResponse:
    return error_response(429, str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    error_id = uuid.uuid4().hex[:16]
    log.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return error_response(
        500,
        f"internal error {error_id} while handling {request.method} {request.url.path}; "
        "the server log has the details under this id",
        error_id=error_id,
    )


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ExperimentNotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(ActiveLimitExceeded, _over_limit)  # type: ignore[arg-type]
    app.add_exception_handler(sa_exc.SQLAlchemyError, _database_error(retry_after_s))
    app.add_exception_handler(Exception, _unexpected)


class BodySizeLimitMiddleware:
    """413 for a request body over `limits.max_request_bytes`, declared or streamed.

    Also makes the app's limits the ones the schemas validate against during the request.
    Bodies are buffered (they are at most the limit) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_request_bytes
        with using_limits(self.limits):
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._too_large(send, limit, int(declared))
                return
            if scope.get("method") not in ("POST", "PUT", "PATCH"):
                await self.app(scope, receive, send)
                return
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    await self.app(scope, _replay([message]), send)
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await self._too_large(send, limit, None)
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            await self.app(
                scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send
            )

    @staticmethod
    async def _too_large(send: Send, limit: int, declared: int | None) -> None:
        size = f"{declared} bytes" if declared is not None else "more"
        response = error_response(
            413,
            f"request body of {size} is over the limit of {limit} bytes "
            "(max_request_bytes; the server's GRADWATCH_LIMIT_MAX_REQUEST_BYTES raises it)",
        )
        await response({"type": "http"}, _empty_receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}
