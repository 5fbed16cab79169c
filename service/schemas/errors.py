"""The one shape of every error body the API returns (400, 404, 409, 413, 422, 500, 503 …).

    {"message": "model.hidden_sizes.0: 5000 is above the limit 4096 (max_width; …)",
     "detail": [{"loc": ["body", "model", "hidden_sizes", 0], "msg": "…", "type": "limit_exceeded"}],
     "error_id": null}

`message` always says what was wrong, where, and what to do. `detail` keeps FastAPI's
convention, which existing clients read: the problems field by field for a 422, the
message again for every other status. `error_id` is set on a 500 only: the server log's
line for that error carries the same id, and the body never names the exception.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `query`, `path` …, then the field's path.")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    message: str = Field(description="What was wrong, where, and what to do.")
    detail: str | list[ErrorDetail] = Field(
        description="422: every problem, field by field; otherwise the same text as `message`."
    )
    error_id: str | None = Field(
        None, description="500 only: the id of this error in the server's log; quote it when reporting."
    )


# One shape for every status; the old name stays importable for the routes' `responses`.
ValidationErrorResponse = ErrorResponse
