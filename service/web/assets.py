"""Where the dashboard's files come from: its own static/ folder, and the bundles that
third-party distributions install (so nothing is fetched from a CDN at run time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
# A day: the bundles change only with the installed distributions.
VENDOR_CACHE = {"Cache-Control": "public, max-age=86400"}

router = APIRouter(include_in_schema=False)


def plotly_bundle() -> Path:
    """plotly.js as the `plotly` distribution ships it (its offline mode uses the same
    file), found without importing plotly's Python side, which the service never uses."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `plotly` distribution is missing: pip install plotly (the dashboard serves its bundle)")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


@router.get("/static/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(plotly_bundle(), media_type="text/javascript", headers=VENDOR_CACHE)
