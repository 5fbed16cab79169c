"""The CLI's `summary`, `sweep`, `compare`, `delete`, `export` and `open`, the verdict
after `submit --wait`, and tables at 80 columns, against a real API (uvicorn in a thread,
as in test_cli.py); a test thread plays the worker through the store."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from pathlib import Path

import pyarrow.csv as pa_csv

from service import store
from tests.service.analysis.synthetic import mlp_run, recurrent_run, store_run
from tests.service.test_cli import SPEC, ApiServer, invoke, submitted_id

OWNER = "cli-user"  # the owner of ApiServer's token



def _play_queued(api: ApiServer, count: int) -> threading.Thread:
    """A worker thread: plays each of the first `count` queued experiments to the end."""

    def run() -> None:
        done: set[str] = set()
        deadline = time.monotonic() + 60
        while len(done) < count and time.monotonic() < deadline:
            with api.sessions() as session:
                queued, _ = store.list_experiments(session, status="queued")
            for record in queued:
                if record.id not in done:
                    api.play_worker(record.id)
                    done.add(record.id)
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_summary_prints_the_verdict_evidence_and_remedies(api: ApiServer) -> None:
    with api.sessions() as session:
        sigmoid = store_run(session, mlp_run("sigmoid"), owner=OWNER)
    result = invoke(api, "summary", sigmoid)
    assert result.exit_code == 0, result.output
    assert "verdict: vanishing" in result.output
    assert "vanishing_depth" in result.output and "ratio" in result.output  # a finding and its evidence
    assert "remedies:" in result.output and "try: model.activation=relu" in result.output
    as_json = json.loads(invoke(api, "summary", sigmoid, "--json").output)
    assert as_json["verdict"] == "vanishing" and as_json["remedies"]
    unknown = invoke(api, "summary", "0" * 32)
    assert unknown.exit_code == 1 and "404" in unknown.output


def test_submit_wait_ends_with_the_verdict(api: ApiServer, spec_file: Path) -> None:
    player = _play_queued(api, 1)
    result = invoke(api, "submit", str(spec_file), "--wait", "--poll", "0.1", "--timeout", "60")
    player.join(60)
    assert result.exit_code == 0, result.output
    # The verdict comes last, after the result table.
    assert result.output.index("final_loss") < result.output.index("verdict: ")


def test_sweep_wait_follows_every_member_and_prints_their_verdicts(api: ApiServer, tmp_path: Path) -> None:
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps({"name": "lr", "base": SPEC, "grid": {"training.lr": [0.01, 0.1]}}))
    player = _play_queued(api, 2)
    result = invoke(api, "sweep", str(sweep_file), "--wait", "--poll", "0.1", "--timeout", "60")
    player.join(60)
    assert result.exit_code == 0, result.output
    assert "submitted sweep" in result.output and "(2 experiments)" in result.output
    assert "finished: 2 succeeded" in result.output
    rows = [line for line in result.output.splitlines() if "lr=0." in line]
    assert len(rows) == 2 and all("succeeded" in row and "0.05" in row and "0.95" in row for row in rows), result.output
    assert all(re.search(r"healthy|vanishing|exploding", row) for row in rows), result.output
    not_a_sweep = tmp_path / "not.json"
    not_a_sweep.write_text(json.dumps(SPEC))
    refused = invoke(api, "sweep", str(not_a_sweep))
    assert refused.exit_code == 1 and "`base`" in refused.output


def test_compare_two_runs_submitted_apart(api: ApiServer, tmp_path: Path) -> None:
    with api.sessions() as session:
        rnn = store_run(session, recurrent_run("rnn"), owner=OWNER)
        lstm = store_run(session, recurrent_run("lstm"), owner=OWNER)
    picture = tmp_path / "compare.png"
    result = invoke(api, "compare", rnn, lstm, "--png", str(picture))
    assert result.exit_code == 0, result.output
    assert "loss (differing:" in result.output and "model.type" in result.output
    rnn_row = next(line for line in result.output.splitlines() if "type=rnn" in line)
    assert "vanishing" in rnn_row and "succeeded" in rnn_row
    assert "healthy" in next(line for line in result.output.splitlines() if "type=lstm" in line)
    assert picture.read_bytes().startswith(b"\x89PNG")
    by_layer = json.loads(invoke(api, "compare", rnn, lstm, "--metric", "grad_mean_abs", "--json").output)
    assert by_layer["metric"] == "grad_mean_abs" and [m["layer"] for m in by_layer["members"]] == ["rnn.weight_ih_l0"] * 2
    assert invoke(api, "compare").exit_code == 1  # neither ids nor --sweep


def test_compare_a_sweep(api: ApiServer, tmp_path: Path) -> None:
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps({"base": SPEC, "grid": {"training.seed": [0, 1]}}))
    player = _play_queued(api, 2)
    submitted = invoke(api, "sweep", str(sweep_file), "--wait", "--poll", "0.1", "--timeout", "60")
    player.join(60)
    sweep_id = submitted.output.split("submitted sweep ", 1)[1].split()[0]
    result = invoke(api, "compare", "--sweep", sweep_id, "--metric", "grad_mean_abs")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "seed=" in line]
    assert len(rows) == 2 and all("layers.0.weight" in row and "0.001" in row for row in rows), result.output


def test_delete_export_and_open(api: ApiServer, spec_file: Path, tmp_path: Path) -> None:
    experiment_id = submitted_id(invoke(api, "submit", str(spec_file)).output)
    api.play_worker(experiment_id)
    target = tmp_path / "run.csv"
    exported = invoke(api, "export", experiment_id, "--format", "csv", "--out", str(target))
    assert exported.exit_code == 0, exported.output
    table = pa_csv.read_csv(io.BytesIO(target.read_bytes()))
    assert table.column_names == ["step", "metric", "layer", "timestep", "value"]
    assert table.num_rows == 40 * 3  # loss and two layers' grad_mean_abs, 40 steps each
    opened = invoke(api, "open", experiment_id)
    assert opened.exit_code == 0 and opened.output.strip() == f"{api.url}/experiments/{experiment_id}"
    deleted = invoke(api, "delete", experiment_id)
    assert deleted.exit_code == 0 and f"deleted {experiment_id}" in deleted.output
    assert invoke(api, "status", experiment_id).exit_code == 1
    gone = invoke(api, "open", experiment_id)
    assert gone.exit_code == 1 and "404" in gone.output


def test_tables_at_80_columns_cut_no_number(api: ApiServer) -> None:
    long_name = "a-rather-long-experiment-name-that-a-researcher-might-well-choose-" * 2
    with api.sessions() as session:
        experiment_id = store_run(session, mlp_run("sigmoid"), owner=OWNER)
        store.create_experiment(session, name=long_name, tags=[], spec=SPEC, queue="cpu", owner=OWNER)
    series = invoke(api, "series", experiment_id, "--metric", "grad_mean_abs")
    assert series.exit_code == 0, series.output
    assert max(len(line) for line in series.output.splitlines()) <= 80, series.output
    answer = json.loads(invoke(api, "series", experiment_id, "--metric", "grad_mean_abs", "--json").output)
    for line in answer["series"]:
        for value in (line["values"][0], line["values"][-1], min(line["values"]), max(line["values"])):
            assert f"{value:.6g}" in series.output, (value, series.output)
    listed = invoke(api, "list")
    assert listed.exit_code == 0 and max(len(line) for line in listed.output.splitlines()) <= 80, listed.output
    assert experiment_id in listed.output and " 0/200 " in listed.output  # the id and progress whole
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", listed.output)
    status = invoke(api, "status", experiment_id)
    assert max(len(line) for line in status.output.splitlines()) <= 80
