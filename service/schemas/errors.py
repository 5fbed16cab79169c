"""The shape of every error body the API returns."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    message: str
    detail: list[ErrorDetail]


class ErrorResponse(BaseModel):
    detail: str
