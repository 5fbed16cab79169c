"""The app with the analysis routers, for their tests until `create_app` includes them."""

from __future__ import annotations

from fastapi import FastAPI

from service.api.main import create_app
from service.api.routes import analysis, export, plots, sweeps
from service.config import Settings

ROUTERS = (analysis.router, plots.experiments_router, plots.sweeps_router, sweeps.router, export.router)


def analysis_app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    present = {getattr(route, "path", None) for route in app.routes}
    for router in ROUTERS:
        if not any(route.path in present for route in router.routes):  # type: ignore[attr-defined]
            app.include_router(router)
    return app
