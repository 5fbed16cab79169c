"""The committed Plotly.js bundle is byte for byte the file of the npm package version that
static/vendor/README.md names: the package's tarball is fetched from the npm registry (no
Node.js needed), checked against the integrity digest pinned here (the one npm records for
that version), and its file compared with ours. Skipped, saying so, where the registry cannot
be reached (an offline machine); test_assets.py's SHA-256 pin still holds there."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile

import httpx
import pytest

from service.web.assets import STATIC

PACKAGE, VERSION = "plotly.js-cartesian-dist-min", "4.1.1"
# `npm view plotly.js-cartesian-dist-min@4.1.1 dist.integrity`
INTEGRITY = "sha512-o8GrFeusncwBIxbBynRJpY4pkgVB6caM+JLpwrLYbbsO7dZ8FJ+SVN2Fr+L7kiG/Z6w4P5O0Jus/Qr5EefHVeg=="
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
FILES = {"package/plotly-cartesian.min.js": "vendor/plotly/plotly-cartesian.min.js", "package/LICENSE": "vendor/plotly/LICENSE"}


def test_the_plotly_bundle_is_the_npm_package_version_it_names() -> None:
    try:
        tarball = httpx.get(TARBALL, timeout=30, follow_redirects=True)
    except httpx.HTTPError as error:
        pytest.skip(f"the npm registry cannot be reached ({error}); the SHA-256 pin of test_assets.py still holds")
    tarball.raise_for_status()
    assert "sha512-" + base64.b64encode(hashlib.sha512(tarball.content).digest()).decode() == INTEGRITY
    with tarfile.open(fileobj=io.BytesIO(tarball.content), mode="r:gz") as archive:
        for member, ours in FILES.items():
            assert archive.extractfile(member).read() == (STATIC / ours).read_bytes(), ours
