"""`service/` never imports torch (STYLE.md, layer 1): the API, the CLI and the client run
where torch is not installed, and the API never pays for importing it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import service
names = sorted(m.name for m in pkgutil.walk_packages(service.__path__, "service."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}))
"""


def test_importing_every_module_of_the_service_package_never_imports_torch() -> None:
    answer = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert answer.returncode == 0, answer.stderr
    report = json.loads(answer.stdout.strip().splitlines()[-1])
    # Every module was reached, the CLI and the API app among them.
    assert {"service.cli", "service.api.main", "service.client", "service.plots.series"} <= set(report["modules"])
    assert len(report["modules"]) > 40, report["modules"]
    assert report["torch"] == [], f"torch imported by the service package: {report['torch'][:5]}"
