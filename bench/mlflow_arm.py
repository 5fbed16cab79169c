"""The MLflow side of the ingestion and query benchmarks, run by MLflow's own interpreter.

    <mlflow python> bench/mlflow_arm.py COMMAND '<json payload>'

MLflow pins an older pyarrow than gradwatch, so it is installed in a virtual environment
of its own (`.venv-bench`); `bench.common.mlflow_call` runs this script there and reads the
JSON object it prints on its last line. Only the standard library, numpy and MLflow are
imported here: nothing from gradwatch.

Commands:
- `setup {tracking_uri, experiment}` → {run_id}: creates MLflow's schema (its own
  migrations, on first use of an empty database), an experiment and a run;
- `log {tracking_uri, run_id, keys, steps, start_step, batch, seed}` → {seconds_log_batch,
  seconds_wall, points}: logs `steps` × len(keys) points with `MlflowClient.log_batch`,
  `batch` metrics per call (1,000 is MLflow's limit); `seconds_log_batch` times the calls
  alone (building the `Metric` objects is left out, in MLflow's favour);
- `history {tracking_uri, run_id, key, repeats, expect}` → {timings_ms}: times
  `MlflowClient.get_metric_history(run_id, key)` after one warm-up call, checking it
  returns `expect` points;
- `interval {server, run_id, key, max_results, repeats}` → {timings_ms, points}: times the
  tracking server's `get-history-bulk-interval` (what MLflow's UI charts ask for: a
  sampled view of at most `max_results` steps), over HTTP.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request

import numpy as np


def values_for(keys: list[str], steps: np.ndarray, seed: int) -> np.ndarray:
    """The benchmark's points (steps, keys): the same generator as bench/ingest.py."""
    rng = np.random.default_rng(seed + int(steps[0]) if len(steps) else seed)
    return np.exp(rng.normal(-4.0, 1.0, size=(len(steps), len(keys))))


def client(tracking_uri: str):  # noqa: ANN201 - MlflowClient, imported lazily
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def setup(payload: dict) -> dict:
    mlflow_client = client(payload["tracking_uri"])
    experiment_id = mlflow_client.create_experiment(payload["experiment"])
    run = mlflow_client.create_run(experiment_id)
    return {"run_id": run.info.run_id, "experiment_id": experiment_id}


def log(payload: dict) -> dict:
    from mlflow.entities import Metric

    mlflow_client = client(payload["tracking_uri"])
    keys: list[str] = payload["keys"]
    steps_total, start_step, batch = payload["steps"], payload.get("start_step", 0), payload["batch"]
    chunk_steps = payload.get("chunk_steps", 50)  # the values are generated as gradwatch's flushes are
    timestamp = int(time.time() * 1000)
    in_calls = 0.0
    pending: list = []
    started = time.perf_counter()
    for first in range(start_step, start_step + steps_total, chunk_steps):
        steps = np.arange(first, min(first + chunk_steps, start_step + steps_total), dtype=np.int64)
        values = values_for(keys, steps, payload["seed"])
        for row, step in enumerate(steps.tolist()):
            for column, key in enumerate(keys):
                pending.append(Metric(key, float(values[row, column]), timestamp + step, step))
        while len(pending) >= batch:
            call_started = time.perf_counter()
            mlflow_client.log_batch(payload["run_id"], metrics=pending[:batch])
            in_calls += time.perf_counter() - call_started
            del pending[:batch]
    if pending:
        call_started = time.perf_counter()
        mlflow_client.log_batch(payload["run_id"], metrics=pending)
        in_calls += time.perf_counter() - call_started
    return {
        "seconds_log_batch": in_calls,
        "seconds_wall": time.perf_counter() - started,
        "points": steps_total * len(keys),
    }


def history(payload: dict) -> dict:
    mlflow_client = client(payload["tracking_uri"])
    mlflow_client.get_metric_history(payload["run_id"], payload["key"])  # warm-up: connection, imports
    timings = []
    for _ in range(payload["repeats"]):
        started = time.perf_counter()
        metrics = mlflow_client.get_metric_history(payload["run_id"], payload["key"])
        timings.append((time.perf_counter() - started) * 1000)
        if len(metrics) != payload["expect"]:
            raise SystemExit(f"get_metric_history returned {len(metrics)} points, expected {payload['expect']}")
    return {"timings_ms": timings}


def interval(payload: dict) -> dict:
    query = urllib.parse.urlencode(
        {"run_ids": payload["run_id"], "metric_key": payload["key"], "max_results": payload["max_results"]}
    )
    url = f"{payload['server']}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?{query}"
    timings, points = [], 0
    for _ in range(payload["repeats"] + 1):  # the first is a warm-up, dropped
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=300) as response:  # noqa: S310 - a local server
            body = json.loads(response.read())
        timings.append((time.perf_counter() - started) * 1000)
        points = len(body.get("metrics", []))
    return {"timings_ms": timings[1:], "points": points}


COMMANDS = {"setup": setup, "log": log, "history": history, "interval": interval}

if __name__ == "__main__":
    command, payload = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(COMMANDS[command](payload)), flush=True)
