"""`notify`: where to POST an event when a run (or a whole sweep) ends.

The URL's form is checked here; whether its host is allowed depends on the server's
GRADWATCH_CALLBACK_ALLOWED_HOSTS and is checked at submission by
`service.callbacks.allowlist`.
"""

from __future__ import annotations

from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

# `timed_out`: a run stopped at its `training.max_runtime_s` budget.
EndStatus = Literal["succeeded", "failed", "diverged", "cancelled", "timed_out"]
END_STATUSES: tuple[str, ...] = get_args(EndStatus)
MAX_URL_LENGTH = 2048  # the callbacks.url column


class NotifySpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": "http://127.0.0.1:9000/gradwatch", "events": ["succeeded", "failed"]}]},
    )

    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="http(s) URL that receives the event as a signed JSON POST; its host must be "
        "in the server's GRADWATCH_CALLBACK_ALLOWED_HOSTS (loopback only by default).",
    )
    events: list[EndStatus] = Field(
        default_factory=lambda: list(END_STATUSES),
        min_length=1,
        description="End statuses that are announced (default: all). A sweep is announced once "
        "every member has ended, if any member ended in one of them.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            port = parts.port  # raises on a port that is not a number below 65536
        except ValueError as error:
            raise PydanticCustomError("url_parsing", "notify.url is not a URL: {error}", {"error": str(error)}) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PydanticCustomError(
                "url_scheme", "notify.url must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:9000/hook"
            )
        if parts.username is not None or parts.password is not None:
            raise PydanticCustomError(
                "url_credentials",
                "notify.url must not carry a user or password (it is stored and shown); "
                "verify the signature header instead",
            )
        if port == 0:
            raise PydanticCustomError("url_port", "notify.url has port 0, which nothing listens on")
        return url

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))
