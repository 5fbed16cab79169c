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

from pydantic import ValidationInfo
from pydantic_core import PydanticCustomError

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
