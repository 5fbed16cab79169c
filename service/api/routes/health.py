"""/api/v1/health: 200 when the database and the broker answer, else 503 naming which."""

from __future__ import annotations

import os
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.config import Settings
from service.queue import broker_folders, ensure_broker_folders

router = APIRouter(prefix="/api/v1", tags=["health"])

TIMEOUT_S = 3


class HealthResponse(BaseModel):
    status: str  # ok | unavailable
    database: str  # ok, or what failed
    broker: str


def check_database(engine: sa.Engine) -> str:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return "ok"
    except Exception as error:  # noqa: BLE001 - report any failure
        return f"error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def check_broker(settings: Settings) -> str:
    try:
        if settings.uses_embedded_broker:
            ensure_broker_folders(settings)
            for folder in broker_folders(settings).values():
                probe = folder / f".health-{uuid.uuid4().hex}"
                probe.write_bytes(b"")
                os.unlink(probe)
            return "ok"
        if not settings.broker_url.startswith(("redis://", "rediss://")):
            from kombu import Connection

            with Connection(settings.broker_url, connect_timeout=TIMEOUT_S) as connection:
                connection.ensure_connection(max_retries=1)
            return "ok"
        import redis

        client = redis.Redis.from_url(
            settings.broker_url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
        )
        try:
            client.ping()
        finally:
            client.close()
        return "ok"
    except Exception as error:  # noqa: BLE001
        return f"error: {type(error).__name__}: {error}"


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "The database or the broker is down."}},
)
def health(request: Request) -> Any:
    settings: Settings = request.app.state.settings
    body = HealthResponse(
        status="ok",
        database=check_database(request.app.state.engine),
        broker=check_broker(settings),
    )
    if body.database != "ok" or body.broker != "ok":
        body.status = "unavailable"
        return JSONResponse(status_code=503, content=body.model_dump())
    return body
