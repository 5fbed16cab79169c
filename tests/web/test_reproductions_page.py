"""The reproductions pages in a real Chromium against the embedded stack (a real API and a
real Celery worker): /reproductions lists the whole catalogue with each claim's source and
expected numbers, its button starts the fastest study the suite runs, and the run's page
follows it live until every claim carries a `reproduced` badge, with the member
experiments and the plots linked."""

from __future__ import annotations

import pytest

from service.reproductions.catalogue import STUDIES
from tests.e2e.stack import Stack
from tests.web.conftest import log_in, new_context

pytestmark = pytest.mark.slow

FASTEST = min((s for s in STUDIES if s.in_ci), key=lambda s: s.minutes_here)


def test_the_catalogue_lists_every_study_and_a_started_one_ends_reproduced(browser, embedded: Stack, screenshot) -> None:
    context, guard = new_context(browser, embedded)
    page = log_in(context, embedded)
    page.click("header.top nav >> text=Reproductions")
    page.wait_for_selector("body[data-ready=true]")
    assert page.url == f"{embedded.api_url}/reproductions"
    assert page.get_attribute("header.top nav a[href='/reproductions']", "aria-current") == "page"
    sections = page.locator("section.study")
    assert sections.count() == len(STUDIES)
    card = page.locator(f"#study-{FASTEST.name}")
    assert FASTEST.title in card.locator("h2").inner_text()
    first = FASTEST.claims[0]
    assert first.sentence in card.inner_text() and first.source in card.inner_text()
    expected = card.locator("table.checks tbody tr")
    assert expected.count() == len(first.checks)
    assert first.checks[0].label in expected.nth(0).inner_text()
    screenshot(page, "reproductions")

    card.locator("button.start").click()
    page.wait_for_url(f"{embedded.api_url}/reproduction-runs/*")
    run_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("body[data-ready=true]")
    assert FASTEST.title in page.inner_text("#title")
    # Live: the page polls the report, and ends once every member has finished.
    page.wait_for_selector("body[data-finished=true]", timeout=240_000)
    # It showed the run before it finished (its members take seconds), and then the end.
    seen = page.get_attribute("body", "data-seen").split()
    assert seen[0] in ("queued", "running") and seen[-1] == "finished", seen
    assert page.inner_text("#status") == "finished"
    assert page.inner_text("#reproduced") == "reproduced", page.inner_text("#claims")
    rows = page.locator("tr.check")
    assert rows.count() == sum(len(c.checks) for c in FASTEST.claims)
    for i in range(rows.count()):
        row = rows.nth(i)
        assert row.locator(".badge").inner_text() == "passed"
        assert row.locator("td.measured").inner_text() not in ("", "–")
        assert row.locator("a[href^='/experiments/']").count() == 1
        assert row.locator("td.plots a", has_text="summary").count() == 1
    # The page shows what the API reports.
    report = embedded.client.reproduction_run(run_id)
    assert report["reproduced"] is True and report["status"] == "finished"
    assert page.locator(f"a[href='/sweeps/{report['sweep_id']}']").count() == 1
    screenshot(page, "reproduction-run")
    assert guard.blocked == [], f"the pages asked for other hosts: {guard.blocked}"
    assert guard.errors == [], guard.errors
    assert guard.refused == [], f"the Content-Security-Policy refused: {guard.refused}"
    context.close()
