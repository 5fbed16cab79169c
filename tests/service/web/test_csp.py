"""Every page the API serves to a browser carries a Content-Security-Policy: the dashboard's
pages run scripts from this origin's files only (none inline, no eval), talk to this origin
only, and cannot be framed by another site; /docs and /redoc allow exactly their own inline
start-up script, by its hash. The browser tests (tests/web/) check that the pages need no
more than this: any refusal logged in Chromium's console fails them."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import httpx

from service.web.assets import TEMPLATES

PAGES = ("/", "/experiments/" + "0" * 32, "/compare?ids=a,b", "/sweeps/" + "0" * 32, "/new", "/reproductions",
         "/reproduction-runs/" + "0" * 32)


def directives(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    parsed = {}
    for directive in policy.split(";"):
        name, *sources = directive.split()
        assert name not in parsed, f"{name} twice in {policy}"
        parsed[name] = sources
    return parsed


def test_every_dashboard_page_allows_only_this_origins_script_files(client: httpx.Client) -> None:
    client.post("/api/v1/session").raise_for_status()  # a page needs the session cookie
    for path in (*PAGES, "/login"):
        response = client.get(path)
        assert response.status_code == 200 and "<html" in response.text, path
        policy = directives(response)
        assert policy["script-src"] == ["'self'"], (path, policy)  # no 'unsafe-inline', no 'unsafe-eval'
        assert policy["default-src"] == ["'self'"] and policy["connect-src"] == ["'self'"], path
        assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"], path
        assert policy["form-action"] == ["'self'"] and policy["base-uri"] == ["'none'"], path


def test_a_page_asked_for_without_a_session_redirects_before_any_policy_matters(client: httpx.Client) -> None:
    response = client.get("/new", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/new"


def test_docs_allow_their_own_inline_script_by_hash_and_nothing_else_inline(client: httpx.Client) -> None:
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        policy = directives(response)
        inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
        hashes = ["'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'" for body in inline]
        assert policy["script-src"] == ["'self'", *hashes], (path, policy)
        assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
        assert policy["frame-ancestors"] == ["'none'"] and policy["connect-src"] == ["'self'"], path
    # Swagger UI is started by one inline script: it is allowed, by its digest.
    assert len(re.findall(r"<script>", client.get("/docs").text)) == 1


def test_no_template_has_an_inline_script_or_event_handler() -> None:
    for template in Path(TEMPLATES).glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"{template.name}: inline <script>"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{template.name}: inline event handler"
