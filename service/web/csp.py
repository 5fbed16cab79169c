"""The Content-Security-Policy of every page the API serves to a browser: what a page may
load and run even if a value it shows (an experiment's name, a spec, an error message)
were ever injected as markup. Everything comes from this origin: no other host, no inline
script, no frame of a page inside another site (clickjacking a Cancel or Delete button).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.responses import Response

HEADER = "Content-Security-Policy"
_COMMON = ("default-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
           "form-action 'self'", "frame-ancestors 'none'")  # fmt: skip

# The dashboard's pages: scripts only from files of this origin (no inline script, no eval).
# Styles: Plotly writes `style` attributes on the SVG it draws and adds its own rules in a
# `<style>` element (under style-src 'self' Chromium refuses both and Plotly logs "Cannot
# addRelatedStyleRule, probably due to strict CSP"), so 'unsafe-inline' stays in style-src:
# a style cannot run code, the scripts are what is locked down. Images: the modebar's
# "download as PNG" goes through data: URLs.
DASHBOARD = "; ".join((*_COMMON, "script-src 'self'", "style-src 'self' 'unsafe-inline'", "img-src 'self' data:",
                       "font-src 'self'"))  # fmt: skip

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def script_hashes(html: str) -> list[str]:
    """CSP source expressions ('sha256-…') allowing exactly the inline scripts of `html`
    (FastAPI's /docs page starts Swagger UI from one), and no other inline script."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def api_docs(html: str) -> str:
    """/docs and /redoc: their own inline start-up script by hash; Swagger UI and ReDoc
    style their pages inline (ReDoc through styled-components) and ReDoc runs a worker
    from a blob: URL; images and fonts may be data: URLs inside the bundles. ReDoc's
    bundle also draws a logo from its vendor's CDN: this policy stops that request before
    it leaves (the image then hides itself)."""
    scripts = " ".join(["'self'", *script_hashes(html)])
    return "; ".join((*_COMMON, f"script-src {scripts}", "style-src 'self' 'unsafe-inline'", "img-src 'self' data:",
                      "font-src 'self' data:", "worker-src 'self' blob:"))  # fmt: skip


def apply(response: Response, policy: str) -> Response:
    response.headers[HEADER] = policy
    return response
