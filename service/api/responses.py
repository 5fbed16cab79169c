"""A JSON response rendered by `service.schemas.jsoncodec` (orjson, numpy-aware).

Routes that return large numeric payloads (series, timesteps) build plain dicts of numpy
arrays and return this response directly: no pydantic validation of 100,000 floats, no
Python loop over them, and NaN/±Inf come out as null.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from service.schemas.jsoncodec import dumps


class JSONBytesResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
