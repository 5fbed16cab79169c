"""/docs (Swagger UI) and /redoc with their bundles served by this process: an offline lab
machine shows them as well as one on the internet."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from service.web import csp
from service.web.assets import static_url

router = APIRouter(include_in_schema=False)
TITLE = "gradwatch API"


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    return csp.apply(page, csp.api_docs(bytes(page.body).decode()))


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return _with_policy(get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=TITLE,
        swagger_js_url=static_url("vendor/swagger/swagger-ui-bundle.js"),
        swagger_css_url=static_url("vendor/swagger/swagger-ui.css"),
        swagger_favicon_url=static_url("favicon.svg"),
        # the session cookie reaches "Try it out" too; a bearer token can be set as usual
        swagger_ui_parameters={"persistAuthorization": True},
    ))


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return _with_policy(get_redoc_html(
        openapi_url="/openapi.json",
        title=TITLE,
        redoc_js_url=static_url("vendor/redoc/redoc.standalone.js"),
        redoc_favicon_url=static_url("favicon.svg"),
        with_google_fonts=False,
    ))
