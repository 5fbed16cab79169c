"""The dashboard: pages served by the API process under `/`, same origin, offline.

Every asset ships with the package under static/: the pages' own scripts and styles, and the
third-party bundles committed under static/vendor/ (Plotly.js, Swagger UI, ReDoc, each from
the npm package static/vendor/README.md names). Pages load them by versioned, long-cached
URLs (assets.py) under a Content-Security-Policy (csp.py). The pages read data only through
the JSON API (service/api/routes), as any client does.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.web import assets, docs, pages


def install_web(app: FastAPI) -> None:
    app.include_router(docs.router)
    app.include_router(pages.router)
    # The more specific mount first: /static/v/<build>/… is the long-cached copy of /static/….
    app.mount(assets.VERSIONED_PREFIX, assets.VersionedStatic(directory=assets.STATIC), name="static-versioned")
    app.mount("/static", assets.RevalidatedStatic(directory=assets.STATIC), name="static")
