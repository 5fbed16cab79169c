"""Dependencies the routes declare: `SessionDep`, `SettingsDep`, `EnqueuerDep`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.config import Settings
from service.queue import Enqueuer


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_enqueuer(request: Request) -> Enqueuer:
    return request.app.state.enqueuer


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]
