"""/docs (Swagger UI) and /redoc with their bundles served by this process: an offline lab
machine shows them as well as one on the internet."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
TITLE = "gradwatch API"
# The browser fetches nothing from another host for these pages: ReDoc's bundle draws a
# logo from its vendor's CDN, which this policy stops before any request leaves (the image
# then hides itself). Inline script and styles: FastAPI's page starts the bundle inline.
SAME_ORIGIN_ONLY = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
}


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(SAME_ORIGIN_ONLY)
    return page


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return _same_origin_only(get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=TITLE,
        swagger_js_url="/static/vendor/swagger/swagger-ui-bundle.js",
        swagger_css_url="/static/vendor/swagger/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
        # the session cookie reaches "Try it out" too; a bearer token can be set as usual
        swagger_ui_parameters={"persistAuthorization": True},
    ))


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return _same_origin_only(get_redoc_html(
        openapi_url="/openapi.json",
        title=TITLE,
        redoc_js_url="/static/vendor/redoc/redoc.standalone.js",
        redoc_favicon_url="/static/favicon.svg",
        with_google_fonts=False,
    ))
