"""The OpenAPI document an app publishes: its own limits, and the one error shape.

The schemas mark every bound that comes from `Limits` (`AtMost`, in
service/schemas/limits.py); here each mark becomes that app's value, so an app started
with `GRADWATCH_LIMIT_MAX_WIDTH=512` publishes `maximum: 512` for every width, and the
schema and the server agree for every configuration. Every operation also documents the
statuses any request may get: 503 while the database is unreachable (with Retry-After),
400 and 413 for a body that is not JSON or is too large; and FastAPI's default 422 model
is replaced by the one error shape the API really sends.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.config import Limits
from service.schemas.documents import STORABLE_JSON_NAME, STORABLE_JSON_SCHEMA
from service.schemas.limits import apply_limits

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_FASTAPI_ERROR_MODELS = ("HTTPValidationError", "ValidationError")
_BODY_METHODS = ("post", "put", "patch")


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(ERROR_REF)}}, **extra}


DATABASE_UNREACHABLE = _error(
    "The database is unreachable: nothing was changed; retry after `Retry-After` seconds.",
    headers={"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}},
)


def _one_error_shape(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("$ref", "").rsplit("/", 1)[-1] in _FASTAPI_ERROR_MODELS:
            return dict(ERROR_REF)
        return {key: _one_error_shape(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_one_error_shape(value) for value in node]
    return node


def publish(schema: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """FastAPI's generated document, made true to what the server does."""
    schema = _one_error_shape(apply_limits(schema, limits))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[STORABLE_JSON_NAME] = STORABLE_JSON_SCHEMA
    for name in _FASTAPI_ERROR_MODELS:
        components.pop(name, None)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if "503" in responses:
                description = responses["503"].get("description", "")
                responses["503"] = DATABASE_UNREACHABLE | {
                    "description": f"{description} Or: {DATABASE_UNREACHABLE['description']}".strip()
                }
            elif path != "/api/v1/health":  # health answers 503 with its own report
                responses["503"] = DATABASE_UNREACHABLE
            if method in _BODY_METHODS and "requestBody" in operation:
                responses.setdefault("400", _error("The body is not JSON."))
                responses.setdefault("413", _error("The body is over max_request_bytes."))
    return schema


def install_openapi(app: FastAPI, limits: Limits) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = publish(generate(), limits)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
