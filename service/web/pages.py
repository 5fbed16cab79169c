"""The dashboard's pages, each at a stable URL a researcher can share. A page is a shell
(templates/) whose script reads everything through the JSON API; with authentication on, a
page without a live session cookie redirects to /login. Every page is sent with the
dashboard's Content-Security-Policy (csp.py) and names its files by versioned URLs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from service import store
from service.api.deps import SessionDep, SettingsDep
from service.api.params import ExperimentId, ReproductionRunId, SweepId
from service.auth.session import SESSION_COOKIE
from service.auth.tokens import hash_token
from service.web import csp
from service.web.assets import TEMPLATES, static_url

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES)
templates.env.globals["static"] = static_url
# The experiment page's thinned series length (experiment.js reads it from the page): the
# page preloads the loss series with it, and the script must ask for the very same URL.
SERIES_MAX_POINTS = 2000


def _logged_in(request: Request, session: SessionDep, settings: SettingsDep) -> bool:
    if settings.auth == "off":
        return True
    cookie = request.cookies.get(SESSION_COOKIE)
    return bool(cookie) and store.find_active_token(session, hash_token(cookie)) is not None


def _page(request: Request, session: SessionDep, settings: SettingsDep, name: str, **context: object) -> Response:
    if not _logged_in(request, session, settings):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={target}", status_code=303)
    page = templates.TemplateResponse(request, f"{name}.html", {"page": name, "auth": settings.auth, **context})
    return csp.apply(page, csp.DASHBOARD)


@router.get("/", response_class=HTMLResponse)
def experiments_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _page(request, session, settings, "experiments")


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(experiment_id: ExperimentId, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _page(request, session, settings, "experiment", experiment_id=experiment_id, max_points=SERIES_MAX_POINTS)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _page(request, session, settings, "compare")


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(sweep_id: SweepId, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _page(request, session, settings, "sweep", sweep_id=sweep_id)


@router.get("/reproductions", response_class=HTMLResponse)
def reproductions_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _page(request, session, settings, "reproductions")


@router.get("/reproduction-runs/{run_id}", response_class=HTMLResponse)
def reproduction_run_page(run_id: ReproductionRunId, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _page(request, session, settings, "reproduction_run", run_id=run_id)


@router.get("/new", response_class=HTMLResponse)
def new_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _page(request, session, settings, "new")


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, settings: SettingsDep, next: Annotated[str, Query(max_length=2000)] = "/"
) -> Response:
    # Only a path of this site: `//host` or `https://…` would make the login an open redirect.
    target = next if next.startswith("/") and not next.startswith("//") and "\\" not in next else "/"
    page = templates.TemplateResponse(request, "login.html", {"page": "login", "auth": settings.auth, "next": target})
    return csp.apply(page, csp.DASHBOARD)
