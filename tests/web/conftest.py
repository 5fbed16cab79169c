"""Browser tests: a real headless Chromium (Debian's `chromium`, driven by Playwright for
Python, no downloaded browser) against a real API and worker: the embedded stack (SQLite +
kombu's filesystem broker), and PostgreSQL + Redis for the live view.

Every page gets a network guard: a request to any host but the API's is aborted and
recorded, and a test fails if its page asked for one (the dashboard works offline). The
guard also records what the browser refused under the pages' Content-Security-Policy (its
console says so): a test fails on any such refusal, since the pages are written to need
none.
Screenshots of each page go to artifacts/screenshots/ (CI keeps them; look at them).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy.engine import make_url

from service.db.migrate import upgrade
from tests.conftest import REPO_ROOT, redis_database
from tests.e2e.stack import Stack

CHROMIUM = os.environ.get("GRADWATCH_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
BROWSER_REDIS_DB = 12  # the e2e stacks use 1–11


def _require_chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("GRADWATCH_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _start(stack: Stack, **api_env: str) -> Stack:
    # One torch thread and small flushes: points reach the database every few steps.
    stack.start_api(**api_env)
    stack.start_worker(GRADWATCH_FLUSH_EVERY="5")
    return stack


@pytest.fixture(scope="module")
def embedded(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("gradwatch-web")
    stack = Stack(f"sqlite:///{home / 'gradwatch.db'}", "", home, mnist_data_dir)
    upgrade(stack.database_url)
    try:
        yield _start(stack)
    finally:
        print(stack.logs())
        stack.stop()


@pytest.fixture(scope="module")
def pg_redis(postgres_server_url: str, mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = f"gradwatch_web_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    database_url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    stack = Stack(database_url, redis_database(BROWSER_REDIS_DB), tmp_path_factory.mktemp("gradwatch-web-pg"), mnist_data_dir)
    upgrade(database_url)
    try:
        yield _start(stack)
    finally:
        print(stack.logs())
        stack.stop()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Guard:
    """Aborts and records every request to a host other than the API's."""

    def __init__(self, api_url: str) -> None:
        self.allowed = urlsplit(api_url).netloc
        self.blocked: list[str] = []
        self.errors: list[str] = []  # uncaught errors of the pages' scripts
        self.refused: list[str] = []  # what the Content-Security-Policy stopped

    def console(self, message: object) -> None:
        text = message.text  # type: ignore[attr-defined]
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.refused.append(text)

    def __call__(self, route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if urlsplit(url).netloc == self.allowed or url.startswith(("data:", "blob:")):
            route.continue_()  # type: ignore[attr-defined]
        else:
            self.blocked.append(url)
            route.abort()  # type: ignore[attr-defined]


def new_context(browser: object, stack: Stack) -> tuple[object, Guard]:
    """A fresh browser profile (no cookie) whose every page is network-guarded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=stack.api_url)  # type: ignore[attr-defined]
    # The suite shares two cores with itself and its workers: a page can take many
    # seconds to lay out Plotly or Swagger UI there, and that is not what these tests time.
    context.set_default_timeout(90_000)
    guard = Guard(stack.api_url)
    context.route("**/*", guard)
    context.on("weberror", lambda error: guard.errors.append(str(error.error)))
    context.on("console", guard.console)
    return context, guard


def log_in(context: object, stack: Stack, token: str | None = None) -> object:
    """Log in through the login page, as a user would; returns the page."""
    page = context.new_page()  # type: ignore[attr-defined]
    page.goto("/login?next=/")
    page.fill("#token", token or stack.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.api_url}/")
    return page


def click_cancel(page: object, attempts: int = 3) -> None:
    """Click the page's Cancel and wait for its POST to be answered.

    A click right after a full-page screenshot (the viewport resized and restored, every chart
    relaid out) was lost twice in CI runs (no POST reached the API); a lost click is clicked
    again, and said on stdout, so that it stays visible without failing the test."""
    for attempt in range(1, attempts + 1):
        try:
            with page.expect_response(  # type: ignore[attr-defined]
                lambda r: r.request.method == "POST" and r.url.endswith("/cancel"), timeout=10_000
            ) as response:
                page.click("#cancel")  # type: ignore[attr-defined]
        except PlaywrightTimeout:
            print(f"click_cancel: attempt {attempt} sent no POST within 10 s")
            continue
        assert response.value.ok, response.value.status
        return
    raise AssertionError(f"Cancel clicked {attempts} times and no POST /cancel was answered")


@pytest.fixture
def screenshot() -> object:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(page: object, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        return path

    return save
