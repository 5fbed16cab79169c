"""Every file the dashboard and the API docs need is served by the API itself, from the
package and the distributions it depends on: nothing points at a CDN. The committed Swagger UI
and ReDoc bundles are the ones static/vendor/README.md names."""

from __future__ import annotations

import hashlib

import httpx

from service.web.assets import STATIC

# What static/vendor/README.md names: npm redoc 2.5.4 and swagger-ui-dist 5.35.0.
VENDORED_SHA256 = {
    "redoc/redoc.standalone.js": "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b",
    "swagger/swagger-ui-bundle.js": "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    "swagger/swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
}


def test_the_committed_bundles_are_the_packages_their_readme_names() -> None:
    for name, digest in VENDORED_SHA256.items():
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name


def test_static_assets_and_docs_are_served_from_the_package(client: httpx.Client) -> None:
    plotly = client.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert client.get("/static/vendor/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/vendor/redoc/redoc.standalone.js").status_code == 200
    docs = client.get("/docs").text
    assert "/static/vendor/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    redoc = client.get("/redoc").text
    assert "/static/vendor/redoc/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc
    for page in ("/docs", "/redoc"):  # the bundles' own links to other hosts are stopped in the browser
        assert "default-src 'self'" in client.get(page).headers["content-security-policy"]


def test_no_page_or_script_names_another_host() -> None:
    for path in [*STATIC.glob("js/*.js"), *STATIC.glob("*.css"), *(STATIC.parent / "templates").glob("*.html")]:
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
