"""The dashboard in a real Chromium against the embedded stack (SQLite + the filesystem
broker, a real API and a real Celery worker process), with authentication on: the pages
need a login, the experiments page lists real runs with their verdicts, the essay's
sigmoid run draws one trace per weight layer in depth order and says `vanishing` with its
remedies, the depth heatmap and an RNN's through-time view render, "try this remedy" opens
/new with the changed spec and submitting it creates the experiment, the server's
validation messages land at the field, an RNN and an LSTM submitted separately share one
chart, /docs and /redoc render with every other host blocked, and a cross-site form post
changes nothing."""

from __future__ import annotations

import json

import pytest

from tests.e2e.stack import Stack
from tests.web.conftest import click_cancel, log_in, new_context

pytestmark = pytest.mark.slow

SIGMOID = {
    "name": "essay-sigmoid", "tags": ["essay"],
    "model": {"type": "mlp", "hidden_sizes": [30, 30], "activation": "sigmoid", "init": {"scheme": "xavier_uniform"}},
    "dataset": {"name": "mnist", "split": "test", "limit": 5000},
    "training": {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": 20, "seed": 0},
}  # fmt: skip


def adding(model: str) -> dict:
    return {
        "name": f"adding-{model}", "tags": ["essay"],
        "model": {"type": model, "hidden_size": 32, "num_layers": 1, "activation": "tanh"},
        "dataset": {"name": "adding", "seq_len": 20},
        "training": {"optimizer": "adam", "lr": 0.01, "batch_size": 32, "steps": 40, "seed": 0},
        "logging": {"every": 2, "timesteps_every": 1},
    }  # fmt: skip


LONG = {
    "name": "long-run", "model": {"type": "mlp", "hidden_sizes": [32, 32]}, "dataset": {"name": "digits"},
    "training": {"steps": 1_000_000, "batch_size": 32}, "logging": {"every": 5},
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(embedded: Stack) -> dict[str, dict]:
    client = embedded.client
    submitted = {"sigmoid": client.submit(SIGMOID), "rnn": client.submit(adding("rnn")), "lstm": client.submit(adding("lstm"))}
    finished = {key: embedded.wait(run["id"], timeout=240) for key, run in submitted.items()}
    assert {run["status"] for run in finished.values()} == {"succeeded"}, finished
    return finished


@pytest.fixture(scope="module")
def context(browser: object, embedded: Stack) -> object:
    context, guard = new_context(browser, embedded)
    log_in(context, embedded).close()
    context.guard = guard
    yield context
    assert guard.blocked == [], f"the pages asked for other hosts: {guard.blocked}"
    assert guard.errors == [], guard.errors
    assert guard.refused == [], f"the Content-Security-Policy refused: {guard.refused}"
    context.close()


def ready(page: object, url: str) -> object:
    page.goto(url)
    try:
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    except Exception as error:
        raise AssertionError(f"{url} never got ready; script errors: {page.context.guard.errors}") from error
    return page


def test_pages_need_a_login_and_the_list_shows_runs_with_verdicts(browser, embedded, runs, screenshot) -> None:
    fresh, guard = new_context(browser, embedded)
    page = fresh.new_page()
    page.goto("/")
    assert page.url.startswith(f"{embedded.api_url}/login?next=/"), page.url
    page.fill("#token", "gw_not-a-real-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#flash:not([hidden])")
    assert "unknown or was revoked" in page.inner_text("#flash")
    page.fill("#token", embedded.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{embedded.api_url}/")
    page.wait_for_selector(f"tr[data-id='{runs['sigmoid']['id']}'] .verdict .badge")
    rows = {row.get_attribute("data-id"): row.inner_text() for row in page.query_selector_all("#experiments tbody tr")}
    assert {run["id"] for run in runs.values()} <= rows.keys()
    assert "vanishing" in rows[runs["sigmoid"]["id"]] and "succeeded" in rows[runs["sigmoid"]["id"]]
    cookie = next(c for c in fresh.cookies() if c["name"] == "gw_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # no script can read it
    screenshot(page, "experiments")
    fresh.close()
    assert guard.blocked == []
    assert guard.refused == [], guard.refused


def test_the_sigmoid_run_draws_each_weight_layer_in_depth_order_and_says_vanishing(context, runs, screenshot) -> None:
    page = ready(context.new_page(), f"/experiments/{runs['sigmoid']['id']}")
    traces = page.evaluate("document.getElementById('chart-layers').data.map(t => t.name)")
    assert traces == ["layers.0.weight", "layers.1.weight", "head.weight"]  # weights, input → output
    assert page.evaluate("document.getElementById('chart-layers').layout.yaxis.type") == "log"
    assert "(log scale)" in page.evaluate("document.getElementById('chart-layers').layout.yaxis.title.text")
    colours = page.evaluate("document.getElementById('chart-layers').data.map(t => t.line.color)")
    assert len(set(colours)) == 3  # a colour per depth
    assert page.inner_text("#verdict") == "vanishing"
    remedies = page.query_selector_all("#summary .remedy")
    assert remedies and all(r.query_selector("button.try-remedy") for r in remedies)
    profile = page.evaluate("(() => { const d = document.getElementById('chart-profile').data[0]; return [d.type, d.z.length]; })()")
    assert profile == ["heatmap", 3]  # step × layer, a row per weight layer
    assert page.is_hidden("#through-time")
    # The first chart's data went out once: the page's preload, handed to the script.
    loss_reads = page.evaluate("performance.getEntriesByType('resource').filter((e) => e.name.includes('metric=loss&')).length")
    assert loss_reads == 1
    screenshot(page, "experiment-sigmoid")
    page.close()


def test_an_rnn_shows_its_gradient_through_time_and_memory_horizon(context, runs, screenshot) -> None:
    page = ready(context.new_page(), f"/experiments/{runs['rnn']['id']}")
    page.wait_for_selector("#chart-horizon .main-svg")
    assert page.is_visible("#through-time")
    heat = page.evaluate("(() => { const d = document.getElementById('chart-timesteps-heatmap').data[0]; return [d.type, d.x.length]; })()")
    assert heat == ["heatmap", 20]  # every timestep of T = 20
    curves = page.evaluate("document.getElementById('chart-timesteps').data.length")
    assert curves >= 2
    assert page.evaluate("document.getElementById('chart-timesteps').layout.yaxis.type") == "log"
    screenshot(page, "experiment-rnn")
    page.close()


def test_try_this_remedy_opens_new_with_the_changed_spec_and_submits_it(context, embedded, runs, screenshot) -> None:
    summary = embedded.client.summary(runs["sigmoid"]["id"])
    first = summary["remedies"][0]
    page = ready(context.new_page(), f"/experiments/{runs['sigmoid']['id']}")
    page.click("button.try-remedy[data-remedy='0']")
    page.wait_for_selector("body[data-ready=true]")
    assert "/new?from=" in page.url
    spec = json.loads(page.input_value("#spec"))
    for path, value in first["spec_changes"].items():
        node = spec
        for key in path.split("."):
            node = node[key]
        assert node == value, (path, node, value)

    # A value past a limit: the server's message is shown at its field.
    broken = {**spec, "model": {**spec["model"], "hidden_sizes": [30, 5000]}}
    page.fill("#spec", json.dumps(broken, indent=2))
    page.click("#submit")
    problem = page.wait_for_selector("li.problem[data-field='model.hidden_sizes.1']")
    assert "above the limit" in problem.inner_text()
    line = int(problem.get_attribute("data-line"))
    assert "5000" in page.input_value("#spec").split("\n")[line - 1]
    screenshot(page, "new-validation")

    page.fill("#spec", json.dumps(spec, indent=2))
    page.click("#submit")
    page.wait_for_url(f"{embedded.api_url}/experiments/*")
    created = embedded.client.get(page.url.rsplit("/", 1)[1])
    assert created["spec"]["model"] == spec["model"] and created["spec"]["training"]["steps"] == spec["training"]["steps"]
    embedded.client.cancel(created["id"])
    page.close()


def test_compare_puts_an_rnn_and_an_lstm_on_one_chart(context, runs, screenshot) -> None:
    ids = f"{runs['rnn']['id']},{runs['lstm']['id']}"
    page = ready(context.new_page(), f"/compare?ids={ids}&metric=loss")
    names = page.evaluate("document.getElementById('chart-compare').data.map(t => t.name)")
    assert len(names) == 2 and any("rnn" in n for n in names) and any("lstm" in n for n in names), names
    assert "model.type" in page.inner_text("#compare-summaries")
    screenshot(page, "compare")
    page.close()


def test_docs_and_redoc_render_with_every_other_host_blocked(browser, embedded, screenshot) -> None:
    docs, guard = new_context(browser, embedded)
    page = docs.new_page()
    page.goto("/docs")
    page.wait_for_selector(".opblock", timeout=120_000)  # Swagger UI 5 renders slowly on a loaded machine
    assert len(page.query_selector_all(".opblock")) >= 20
    screenshot(page, "docs")
    assert guard.refused == [], guard.refused  # Swagger UI's start-up script is allowed by its hash
    page.goto("/redoc")
    page.get_by_text("/api/v1/experiments/{experiment_id}/events").first.wait_for(timeout=120_000)
    assert guard.blocked == [], guard.blocked
    # The one thing the policy stops there, by design: ReDoc's logo from its vendor's CDN.
    assert all("img-src" in refused and "cdn.redoc.ly" in refused for refused in guard.refused), guard.refused
    docs.close()


def test_a_cross_site_form_post_changes_nothing(context, embedded) -> None:
    running = embedded.client.submit(LONG)
    embedded.wait_for_step(running["id"], 1, timeout=120)
    target = f"{embedded.api_url}/api/v1/experiments/{running['id']}/cancel"
    attack = f"<form method=post action='{target}'></form><script>document.forms[0].submit()</script>"
    answers = {}
    # Another site (the cookie stays home: SameSite=Strict), and another port of this host
    # (same site: the cookie goes along, and the Origin check refuses it).
    for origin in ("http://localhost:9", "http://127.0.0.1:9"):
        page = context.new_page()
        page.route(f"{origin}/**", lambda route: route.fulfill(status=200, content_type="text/html", body=attack))
        with page.expect_response(target) as response:
            page.goto(f"{origin}/attack.html")
        answers[origin] = response.value.status
        page.close()
    assert answers == {"http://localhost:9": 401, "http://127.0.0.1:9": 403}
    experiment = embedded.client.get(running["id"])
    assert experiment["status"] == "running" and experiment["cancel_requested"] is False

    # The page itself cancels it (its requests carry the CSRF value).
    page = ready(context.new_page(), f"/experiments/{running['id']}")
    click_cancel(page)
    assert embedded.wait(running["id"], timeout=60)["status"] == "cancelled"
    page.wait_for_selector("#status.status-cancelled")
    page.close()
