"""The live view on PostgreSQL + Redis, in a real Chromium: a running experiment's page
receives new points and progress over the event stream, without reloading, within 1 s of
their write; and cancel from the page stops the run.

A write's time is when this test sees it in the database: the worker moves
`progress_step` (last stored step + 1) in the transaction that stores the points, and the
test looks every 20 ms, so it sees each write at most ~20 ms after its commit. The page
records when each event reached it (`window.gradwatchLive`, browser clock = this clock).
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from tests.e2e.stack import Stack
from tests.web.conftest import click_cancel, log_in, new_context

pytestmark = pytest.mark.slow

LIVE_WITHIN_S = 1.0
WATCH_S = 6.0
RUNNING = {
    "name": "live", "model": {"type": "mlp", "hidden_sizes": [64, 64]}, "dataset": {"name": "digits"},
    "training": {"steps": 1_000_000, "batch_size": 32}, "logging": {"every": 5, "flush_every": 4},
}  # fmt: skip


def open_running(browser, stack: Stack, spec: dict) -> tuple[dict, object, object, object]:  # noqa: ANN001
    """Submit `spec`, wait until it ran 50 steps, and open its page (logged in, guarded)."""
    experiment = stack.client.submit(spec)
    stack.wait_for_step(experiment["id"], 50, timeout=120)
    context, guard = new_context(browser, stack)
    page = log_in(context, stack)
    page.goto(f"/experiments/{experiment['id']}")
    page.wait_for_selector("body[data-ready=true]")  # the context allows 90 s
    return experiment, context, guard, page


def test_the_page_follows_a_running_experiment_live_and_cancels_it(browser, pg_redis: Stack, screenshot) -> None:
    experiment, context, guard, page = open_running(browser, pg_redis, RUNNING)
    page.wait_for_function("() => window.gradwatchLive.some(e => e.kind === 'progress')")
    loaded_at = page.evaluate("window.performance.timeOrigin")

    # Watch the database: every write the worker commits, and when we saw it.
    writes: list[tuple[int, float]] = []
    engine = sa.create_engine(pg_redis.database_url)
    try:
        with engine.connect() as connection:
            deadline = time.time() + WATCH_S
            while time.time() < deadline:
                step = connection.execute(
                    sa.text("SELECT progress_step FROM experiments WHERE id = :id"), {"id": experiment["id"]}
                ).scalar_one()
                connection.commit()
                if not writes or step > writes[-1][0]:
                    writes.append((step, time.time()))
                time.sleep(0.02)
    finally:
        engine.dispose()
    time.sleep(LIVE_WITHIN_S)
    arrivals = page.evaluate("window.gradwatchLive")
    assert page.evaluate("window.performance.timeOrigin") == loaded_at  # never reloaded
    assert len(writes) >= 5, writes

    def delay(kind: str, step: int, written: float) -> float:
        seen = [a["at"] / 1000 for a in arrivals if a["kind"] == kind and a["step"] >= step]
        return (min(seen) - written) if seen else float("inf")

    # Each write after the first look (the first may predate the page): its last point
    # (progress - 1) and its progress reached the page within 1 s.
    point_delays = [delay("points", step - 1, written) for step, written in writes[1:]]
    progress_delays = [delay("progress", step, written) for step, written in writes[1:]]
    print(f"live: {len(writes)} writes; points {max(point_delays):.3f} s, progress {max(progress_delays):.3f} s at worst")
    assert max(point_delays) <= LIVE_WITHIN_S, point_delays
    assert max(progress_delays) <= LIVE_WITHIN_S, progress_delays
    drawn = page.evaluate("Number(document.getElementById('chart-layers').dataset.lastStep)")
    assert drawn >= writes[-1][0] - 1
    assert page.evaluate("document.getElementById('chart-layers').data[0].x.length") > 10
    screenshot(page, "experiment-live")

    click_cancel(page)
    assert pg_redis.wait(experiment["id"], timeout=60)["status"] == "cancelled"
    page.wait_for_selector("#status.status-cancelled")
    context.close()
    assert guard.blocked == []
    assert guard.refused == [], guard.refused


RNN_RUNNING = {
    "name": "live-rnn", "model": {"type": "rnn", "hidden_size": 16, "num_layers": 1, "activation": "tanh"},
    "dataset": {"name": "adding", "seq_len": 10}, "training": {"steps": 1_000_000, "batch_size": 16},
    "logging": {"every": 5, "timesteps_every": 5, "flush_every": 4},
}  # fmt: skip


def test_the_through_time_charts_of_a_running_rnn_grow_live(browser, pg_redis: Stack, screenshot) -> None:
    experiment, context, guard, page = open_running(browser, pg_redis, RNN_RUNNING)
    loaded_at = page.evaluate("window.performance.timeOrigin")
    # The last row drawn, read from the chart's own data in one evaluation: the page may be
    # redrawing it from the stream already, and two reads could straddle that redraw.
    last_row = "document.getElementById('chart-timesteps-heatmap').data?.[0]?.y.at(-1) ?? -1"
    last_at_load = page.evaluate(last_row)
    # Rows of later steps arrive over the stream and both charts are redrawn with them.
    page.wait_for_function("() => window.gradwatchLive.filter(e => e.kind === 'timesteps').length >= 2")
    page.wait_for_function(f"() => ({last_row}) > {last_at_load}")
    assert page.evaluate("window.performance.timeOrigin") == loaded_at  # never reloaded
    rows, newest = page.evaluate("""[document.getElementById('chart-timesteps-heatmap').data[0].y,
        document.getElementById('chart-timesteps').data.at(-1).name]""")
    assert rows == sorted(set(rows)) and rows[-1] > last_at_load  # steps ascending, none twice
    # The curves are redrawn just before the heatmap: their latest is of its last row or later.
    assert int(newest.removeprefix("step ")) >= rows[-1], (newest, rows[-1])
    screenshot(page, "experiment-rnn-live")
    click_cancel(page)
    assert pg_redis.wait(experiment["id"], timeout=60)["status"] == "cancelled"
    context.close()
    assert guard.blocked == [] and guard.errors == [] and guard.refused == [], (guard.errors, guard.refused)
