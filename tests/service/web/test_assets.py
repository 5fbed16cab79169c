"""Every file the dashboard and the API docs need is served by the API itself, from the
package: nothing points at a CDN. The committed Plotly.js, Swagger UI and ReDoc bundles are
the ones static/vendor/README.md names. Versioned URLs are cached for a year, plain ones
revalidated."""

from __future__ import annotations

import hashlib

import httpx

from service.web.assets import IMMUTABLE, REVALIDATE, STATIC, build_id, static_url

PLOTLY = "vendor/plotly/plotly-cartesian.min.js"
# What static/vendor/README.md names: npm plotly.js-cartesian-dist-min 4.1.1, redoc 2.5.4
# and swagger-ui-dist 5.35.0 (tests/service/web/test_vendor_npm.py checks the first against
# the npm registry's tarball).
VENDORED_SHA256 = {
    "plotly/plotly-cartesian.min.js": "79542150855a52c567260e3137095dbe2b744e6d702a5cabe67da246942fba7a",
    "redoc/redoc.standalone.js": "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b",
    "swagger/swagger-ui-bundle.js": "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    "swagger/swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
}


def test_the_committed_bundles_are_the_packages_their_readme_names() -> None:
    for name, digest in VENDORED_SHA256.items():
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name


def test_static_assets_and_docs_are_served_from_the_package(client: httpx.Client) -> None:
    plotly = client.get(static_url(PLOTLY))
    assert plotly.status_code == 200 and plotly.content == (STATIC / PLOTLY).read_bytes()
    assert plotly.headers["content-type"].startswith("text/javascript")
    for name in ("vendor/swagger/swagger-ui-bundle.js", "vendor/redoc/redoc.standalone.js"):
        assert client.get(static_url(name)).status_code == 200
    docs = client.get("/docs").text
    assert static_url("vendor/swagger/swagger-ui-bundle.js") in docs and "cdn" not in docs.lower()
    redoc = client.get("/redoc").text
    assert static_url("vendor/redoc/redoc.standalone.js") in redoc and "fonts.googleapis" not in redoc


def test_versioned_urls_are_cached_for_a_year_and_plain_ones_revalidated(client: httpx.Client) -> None:
    versioned = client.get(static_url("js/experiment.js"))
    assert versioned.status_code == 200 and versioned.headers["cache-control"] == IMMUTABLE
    assert static_url("js/experiment.js") == f"/static/v/{build_id()}/js/experiment.js"
    # A page of an older release: the file still comes, but must not be kept under that name.
    stale = client.get("/static/v/000000000000/js/experiment.js")
    assert stale.status_code == 200 and stale.headers["cache-control"] == REVALIDATE
    assert stale.content == versioned.content
    plain = client.get("/static/js/experiment.js")
    assert plain.status_code == 200 and plain.headers["cache-control"] == REVALIDATE
    # An unchanged file costs a 304 on revalidation, not the bytes again.
    again = client.get("/static/js/experiment.js", headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304
    for missing in ("/static/v/" + build_id() + "/js/nothing.js", "/static/v/" + build_id()):
        assert client.get(missing).status_code == 404, missing


def test_every_page_names_its_files_by_versioned_urls(client: httpx.Client) -> None:
    client.post("/api/v1/session").raise_for_status()  # the page's session cookie
    page = client.get("/experiments/" + "0" * 32).text
    assert static_url(PLOTLY) in page and static_url("js/experiment.js") in page and static_url("app.css") in page
    assert 'src="/static/js' not in page and 'href="/static/app.css' not in page
    # The loss series is preloaded by the very URL experiment.js asks for (its length from the page).
    assert 'data-max-points="2000"' in page
    assert f'href="/api/v1/experiments/{"0" * 32}/series?metric=loss&amp;max_points=2000"' in page


def test_no_page_or_script_names_another_host() -> None:
    for path in [*STATIC.glob("js/*.js"), *STATIC.glob("*.css"), *(STATIC.parent / "templates").glob("*.html")]:
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
