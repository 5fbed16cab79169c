"""The dashboard: pages served by the API process under `/`, same origin, offline.

Every asset ships with the package: the pages' own scripts and styles (static/), Plotly's
bundle from the `plotly` distribution, and Swagger UI's and ReDoc's bundles committed under
static/vendor/ (from npm `swagger-ui-dist` and `redoc`, see static/vendor/README.md).
The pages read data only through the JSON API (service/api/routes), as any client does.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.web import assets, docs, pages


def install_web(app: FastAPI) -> None:
    app.include_router(docs.router)
    app.include_router(assets.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=assets.STATIC), name="static")
