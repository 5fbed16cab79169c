"""Every file the dashboard and the API docs need is served by the API itself, from the
package and the distributions it depends on: nothing points at a CDN. The committed ReDoc
bundle is the one its README names."""

from __future__ import annotations

import hashlib

import httpx

from service.web.assets import STATIC

REDOC_SHA256 = "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b"  # npm redoc 2.5.4


def test_the_committed_redoc_bundle_is_npm_redoc_2_5_4() -> None:
    bundle = STATIC / "vendor" / "redoc" / "redoc.standalone.js"
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == REDOC_SHA256


def test_static_assets_and_docs_are_served_from_the_package(client: httpx.Client) -> None:
    plotly = client.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert client.get("/static/vendor/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/vendor/redoc/redoc.standalone.js").status_code == 200
    docs = client.get("/docs").text
    assert "/static/vendor/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    redoc = client.get("/redoc").text
    assert "/static/vendor/redoc/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc


def test_no_page_or_script_names_another_host() -> None:
    for path in [*STATIC.glob("js/*.js"), *STATIC.glob("*.css"), *(STATIC.parent / "templates").glob("*.html")]:
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
