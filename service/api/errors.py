"""Every error the API returns is JSON a user can act on; never a stack trace.

- invalid input → 422 `{"message": "model.hidden_sizes.0: … above the limit 4096 …",
  "detail": [{"loc", "msg", "type"}…]}` (the message joins every problem, field first);
- a body that is not JSON → 400 with the parser's complaint and where it stopped;
- a body over `limits.max_request_bytes` → 413 (see `BodySizeLimitMiddleware`);
- an unknown experiment → 404; an owner at max_active_per_owner → 429 with the
  numbers; no or a bad token → 401 (service/auth/guard.py); anything unexpected → 500 with a plain message, the
  traceback going to the server log only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Limits
from service.schemas.limits import using_limits
from service.store.records import ActiveLimitExceeded, ExperimentNotFound

log = logging.getLogger("gradwatch.api")

# Where a parameter came from, as FastAPI puts it first in `loc`.
_SOURCES = {"body", "query", "path", "header", "cookie"}


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
            return JSONResponse(
                status_code=400,
                content={"detail": f"the request body is not valid JSON: {reason}{where}"},
            )
    problems = validation_problems(errors)
    message = "; ".join(f"{field_name(p['loc'])}: {p['msg']}" for p in problems)
    return JSONResponse(status_code=422, content={"message": message, "detail": problems})


async def _not_found(request: Request, exc: ExperimentNotFound) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _over_limit(request: Request, exc: ActiveLimitExceeded) -> JSONResponse:
    return JSONResponse(status_code=429, content={"detail": str(exc)})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        status_code=500,
        content={
            "detail": f"internal error ({type(exc).__name__}) while handling "
            f"{request.method} {request.url.path}; the server log has the details"
        },
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ExperimentNotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(ActiveLimitExceeded, _over_limit)  # type: ignore[arg-type]
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
        response = JSONResponse(
            status_code=413,
            content={
                "detail": f"request body of {size} is over the limit of {limit} bytes "
                "(max_request_bytes; the server's GRADWATCH_LIMIT_MAX_REQUEST_BYTES raises it)"
            },
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
