"""Where the dashboard's files come from, and how long a browser may keep them.

Everything is in the package's static/ folder (the pages' scripts and styles, and the
third-party bundles committed under static/vendor/), so nothing is fetched from a CDN at run
time. Pages name their files by versioned URLs, `/static/v/<build>/<path>`, where `<build>`
is a digest of every file under static/: a browser may then keep them for a year without
asking again (and reuse V8's compiled code of Plotly's bundle on the next navigation), and a
new release changes every URL at once. The ES modules' relative imports (`./api.js`) resolve
under the same versioned folder, so they are cached the same way. The plain `/static/<path>`
stays for anything else (a bookmark, an old page) and is revalidated on every use.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
VERSIONED_PREFIX = "/static/v"
# A year and `immutable`: the URL changes whenever any file does, so no revalidation.
IMMUTABLE = "public, max-age=31536000, immutable"
# Unversioned URLs may change under the same name: always ask (ETag makes that a 304).
REVALIDATE = "no-cache"


@cache
def build_id() -> str:
    """A digest of every file under static/ (names and contents), read once per process:
    what the versioned URLs carry. 12 hex digits: unique enough to tell releases apart."""
    digest = hashlib.sha256()
    for path in sorted(p for p in STATIC.rglob("*") if p.is_file()):
        digest.update(path.relative_to(STATIC).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def static_url(path: str) -> str:
    """The versioned URL of static/<path>, as the templates and /docs name it."""
    if not (STATIC / path).is_file():
        raise ValueError(f"no file static/{path} in the dashboard's package")
    return f"{VERSIONED_PREFIX}/{build_id()}/{path}"


class VersionedStatic(StaticFiles):
    """`/static/v/<build>/<path>` → static/<path>. Cached for a year when <build> is this
    process's build; a page from an older release still gets the file, but uncached."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        version, _, rest = path.partition("/")
        response = await super().get_response(rest or ".", scope)
        response.headers["Cache-Control"] = IMMUTABLE if version == build_id() else REVALIDATE
        return response


class RevalidatedStatic(StaticFiles):
    """The plain `/static/<path>`: served with `no-cache`, so a browser never runs a stale
    script under an unversioned name."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", REVALIDATE)
        return response
