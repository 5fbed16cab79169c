"""The compose tests run only inside `make compose-test` (tests/compose/run.sh), which
starts a Docker engine, builds the images and names them in an env file; anywhere else
(`make test`) this folder is not collected."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.compose.stack import ComposeStack

if not os.environ.get("GRADWATCH_COMPOSE_ENV_FILE"):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def stack() -> Iterator[ComposeStack]:
    stack = ComposeStack.from_environment()
    stack.up()
    yield stack
    stack.close()
