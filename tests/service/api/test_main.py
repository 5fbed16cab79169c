"""The app factory connects to nothing at import, and its lifespan runs the reaper."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from service import store
from service.api.main import create_app
from service.config import Settings
from service.db.models import Experiment
from tests.service.api.conftest import TEST_OWNER, api_client


def test_importing_the_app_touches_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code = "import service.api.main as m; assert m.app.state.engine.pool.checkedout() == 0"
    env = {"GRADWATCH_HOME": str(home), "GRADWATCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x",
           "GRADWATCH_BROKER_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}  # fmt: skip
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, cwd=Path(__file__).parents[3],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not home.exists()


def test_the_lifespan_reaper_requeues_stale_runs_then_fails_them_past_max_attempts(settings: Settings) -> None:
    stale_s = 1.0
    app = create_app(
        settings.model_copy(update={"reaper_interval_s": 0.05, "heartbeat_stale_s": stale_s, "max_attempts": 2})
    )
    with app.state.session_factory() as session:
        record = store.create_experiment(session, "lost", [], {}, "cpu", owner=TEST_OWNER)
        store.claim_experiment(session, record.id, "killed-worker")
        _age_heartbeat(session, record.id, seconds=90)
    with api_client(app) as client:
        started = time.monotonic()
        body = _until_not_running(client, record.id)
        reaped_after_s = time.monotonic() - started
        # The first lost attempt: queued again (and sent) to resume from its checkpoint.
        assert body["status"] == "queued", body
        (lost,) = body["attempts"]
        assert lost["ending"] == "lost" and re.match(r"worker lost: no heartbeat for 9\d s", lost["why"]), lost
        with app.state.session_factory() as session:
            store.claim_experiment(session, record.id, "killed-again")
            _age_heartbeat(session, record.id, seconds=90)
        body = _until_not_running(client, record.id)
    assert body["status"] == "failed"
    assert re.match(r"worker lost: no heartbeat for 9\d s", body["error"]), body["error"]
    assert "2 of GRADWATCH_MAX_ATTEMPTS = 2" in body["error"]
    assert [attempt["ending"] for attempt in body["attempts"]] == ["lost", "lost"]
    # The reaper's clock (service/db/reachability.py): a reaper just started may follow a
    # database outage, so it gives every worker heartbeat_stale_s to write first.
    assert reaped_after_s >= stale_s


def _until_not_running(client, experiment_id: str) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/experiments/{experiment_id}").json()
        if body["status"] != "running":
            return body
        time.sleep(0.05)
    return body


def _age_heartbeat(session: Session, experiment_id: str, seconds: float) -> None:
    row = session.get(Experiment, experiment_id)
    row.heartbeat_at = row.heartbeat_at - timedelta(seconds=seconds)
    session.commit()


def test_docs_show_an_example_spec_per_model_type(settings: Settings) -> None:
    schema = create_app(settings).openapi()
    body = schema["paths"]["/api/v1/experiments"]["post"]["requestBody"]["content"]["application/json"]
    examples = body["examples"]
    assert set(examples) == {"mlp", "rnn", "lstm", "gru"}
    assert {example["value"]["model"]["type"] for example in examples.values()} == set(examples)
    paths = set(schema["paths"])
    assert {"/api/v1/health", "/api/v1/experiments/{experiment_id}/series",
            "/api/v1/experiments/{experiment_id}/timesteps"} <= paths  # fmt: skip
