"""Browser sessions: a token turned into an HttpOnly, SameSite=Strict cookie, and the CSRF
check every state-changing request made with that cookie must pass.

Logging in (`POST /api/v1/session` with a token) issues a *new* token of the same owner and
scope, named `dashboard session`, and puts that one in the cookie: the pasted token never
lives in the browser, a session shows up in `gradwatch token list`, and logging out (or
`gradwatch token revoke`) ends it.

CSRF: SameSite=Strict keeps the cookie off requests started by another *site*, but another
port of the same host is the same site. So a request authenticated by the cookie that
changes anything must also carry `X-CSRF-Token`, an HMAC of the session token that only a
page of this origin can read (from `GET /api/v1/session`; CORS never exposes it to other
origins), and, when the browser names an Origin, that Origin must be this server's. A plain
cross-site form can set neither header.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from service.auth.tokens import SAFE_METHODS

SESSION_COOKIE = "gw_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TOKEN_NAME = "dashboard session"


def csrf_token(session_token: str) -> str:
    """The CSRF value of a session: derived, so the server stores nothing for it."""
    return hmac.new(session_token.encode("utf-8"), b"gradwatch csrf v1", hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # Sec-Fetch-Site is sent by every current browser, Origin by them on every POST;
        # a request with neither is not a browser's cross-site one.
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def check_browser_write(request: Request, session_token: str | None) -> None:
    """Refuse a state-changing request carried by the session cookie (or by no credential
    at all while authentication is off) without this origin's CSRF proof: 403."""
    if request.method.upper() in SAFE_METHODS:
        return
    if not same_origin(request):
        raise HTTPException(403, "cross-origin request refused: changes come from this server's own pages or an API token")
    if session_token is None:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent, csrf_token(session_token)):
        raise HTTPException(
            403,
            f"the {CSRF_HEADER} header is missing or wrong: a request made with the session cookie that "
            "changes anything must send the value GET /api/v1/session returns",
        )
