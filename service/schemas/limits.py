"""Which `Limits` a request is validated against.

Validators read the limits from the pydantic validation context when one is given
(`ExperimentSpec.model_validate(data, context={"limits": limits})`), else from the
limits of the app serving the current request (set by the API's middleware), else from
the global settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from service.config import Limits, settings

_request_limits: ContextVar[Limits | None] = ContextVar("gradwatch_limits", default=None)


@contextmanager
def using_limits(limits: Limits) -> Iterator[None]:
    token = _request_limits.set(limits)
    try:
        yield
    finally:
        _request_limits.reset(token)


def current_limits(info: ValidationInfo | None = None) -> Limits:
    context: Any = info.context if info is not None else None
    if isinstance(context, dict) and isinstance(context.get("limits"), Limits):
        return context["limits"]
    return _request_limits.get() or settings.limits


def check_at_most(value: int, limit_name: str, info: ValidationInfo, what: str = "") -> int:
    """Raise a 422-ready error naming the limit when `value` exceeds it."""
    limit = getattr(current_limits(info), limit_name)
    if value > limit:
        raise PydanticCustomError(
            "limit_exceeded",
            "{what}{value} is above the limit {limit} ({limit_name}; the server's "
            "GRADWATCH_LIMIT_{env} raises it)",
            {
                "what": what,
                "value": value,
                "limit": limit,
                "limit_name": limit_name,
                "env": limit_name.upper(),
            },
        )
    return value


# The JSON-schema extension naming which limit bounds a value; the app's OpenAPI document
# turns it into the bound itself, from that app's Limits (service/api/openapi.py).
LIMIT_EXTENSION = "x-gradwatch-limits"
INT64_MAX = 2**63 - 1  # what PostgreSQL's BIGINT and SQLite's INTEGER hold


class AtMost:
    """Annotated marker: a value (`keyword="maximum"`) or its length (`"maxLength"`,
    `"maxItems"`) at most the limit `limit_name` of the serving app's `Limits`.

    Validates with `check_at_most` (a 422 naming the limit and its setting) and publishes
    the same bound in the JSON schema, so that schema and server always agree.
    """

    def __init__(self, limit_name: str, what: str = "", keyword: str = "maximum") -> None:
        if limit_name not in Limits.model_fields:
            raise ValueError(f"{limit_name!r} is not a field of Limits")
        self.limit_name, self.what, self.keyword = limit_name, what, keyword

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        measure = len if self.keyword in ("maxLength", "maxItems") else None

        def check(value: Any, info: ValidationInfo) -> Any:
            if value is not None:
                check_at_most(measure(value) if measure else value, self.limit_name, info, self.what)
            return value

        return core_schema.with_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = json_schema
        # `int | None` renders as anyOf: the bound belongs on the non-null branch.
        for branch in json_schema.get("anyOf", []):
            if branch.get("type") != "null":
                target = branch
        target[self.keyword] = getattr(current_limits(), self.limit_name)
        target.setdefault(LIMIT_EXTENSION, {})[self.keyword] = self.limit_name
        return json_schema


def apply_limits(schema: Any, limits: Limits) -> Any:
    """Every bound marked with LIMIT_EXTENSION in a JSON/OpenAPI document, set to `limits`."""
    if isinstance(schema, dict):
        for keyword, limit_name in (schema.get(LIMIT_EXTENSION) or {}).items():
            schema[keyword] = getattr(limits, limit_name)
        for value in schema.values():
            apply_limits(value, limits)
    elif isinstance(schema, list):
        for value in schema:
            apply_limits(value, limits)
    return schema
