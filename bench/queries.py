"""Queries: one series through gradwatch's HTTP API against MLflow's `get_metric_history`
for the same metric: latency.

    python -m bench.queries [--steps 100000] [--rounds 3] [--per-round 3]

The same `--steps` points of `grad_mean_abs` of `layers.0.weight` are stored in both:

- **gradwatch**: through the store (chunks of 50 steps, as the worker flushes them; the
  experiment holds 10 such series) in PostgreSQL, served by the API under uvicorn, and read
  over HTTP with httpx, the JSON decoded as the client does (`.json()`; the time before
  decoding is printed too): the full series, and a 1,000-point view of it
  (`max_points=1000`, M4 min/max thinning, the extremes kept);
- **MLflow**: logged with `log_batch` into MLflow's store on the same PostgreSQL server,
  served by `mlflow server` (one worker), read with `MlflowClient.get_metric_history` over
  its REST API, which is how MLflow users read a metric; it has no thinned variant, so the
  view costs MLflow the full history. For information: the same call straight on the
  database (no server), and the server's `get-history-bulk-interval` with
  `max_results=1000` (what MLflow's own UI asks for: a sample of steps, not extremes).

Rounds alternate the arms; each round times `--per-round` calls of every kind after a
warm-up. The ratios are of medians: MLflow's time over gradwatch's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from bench.common import BENCH_OWNER, api_server, bench_headers, header, latency, mlflow_call, mlflow_server, ratio_line, scratch_database, service_env
from bench.ingest import METRIC, SEED, layers, mlflow_keys, probe_batches
from service import store
from service.db.engine import make_engine, make_session_factory
from workers.writer import to_chunks

LAYER = "layers.0.weight"
SERIES = 10  # series in the gradwatch experiment; the queries read one of them
VIEW_POINTS = 1000


def fill_gradwatch(url: str, n_steps: int) -> str:
    engine = make_engine(url)
    session_factory = make_session_factory(engine)
    with session_factory() as session:
        spec = {"name": "bench-queries", "model": {"type": "mlp"}, "dataset": {"name": "mnist"},
                "training": {"steps": n_steps}}  # fmt: skip
        record = store.create_experiment(session, name="bench-queries", tags=[], spec=spec, queue="cpu", owner=BENCH_OWNER)
        store.claim_experiment(session, record.id, "bench")
        batches = probe_batches(n_steps, SERIES, 50)
        for start in range(0, len(batches), 40):
            chunks = [chunk for batch in batches[start : start + 40] for chunk in to_chunks(batch)[0]]
            store.write_chunks(session, record.id, chunks)
        store.finish_experiment(session, record.id, "succeeded", {"final_loss": 0.0})
    engine.dispose()
    return record.id


def time_http(client: httpx.Client, path: str, params: dict, n: int, expect: int, transfer: list[float]) -> list[float]:
    """Milliseconds per call, the JSON decoded as a client would (httpx's `.json()`);
    the time until the body is received, before decoding, is appended to `transfer`."""
    client.get(path, params=params).raise_for_status()  # warm-up
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path, params=params)
        _ = response.content
        received = time.perf_counter()
        body = response.json()
        timings.append((time.perf_counter() - started) * 1000)
        transfer.append((received - started) * 1000)
        response.raise_for_status()
        got = len(body["series"][0]["steps"])
        if not (got == expect or (expect == VIEW_POINTS and 0 < got <= VIEW_POINTS)):
            raise SystemExit(f"{path} {params} returned {got} points, expected {expect}")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=3)
    args = parser.parse_args()
    key = mlflow_keys(SERIES)[0]
    assert key.endswith(LAYER) and layers(SERIES)[0] == LAYER

    header("queries: gradwatch HTTP series vs MLflow get_metric_history, one metric of "
           f"{args.steps:,} steps, PostgreSQL")  # fmt: skip
    timings: dict[str, list[float]] = {}
    transfer: dict[str, list[float]] = {"full": [], "view": []}  # gradwatch, body received, not decoded
    with scratch_database("queries") as url, scratch_database("mlflowq", migrate=False) as mlflow_url:
        started = time.perf_counter()
        experiment_id = fill_gradwatch(url, args.steps)
        print(f"   filled gradwatch ({SERIES} series x {args.steps:,} steps) in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        run = mlflow_call("setup", {"tracking_uri": mlflow_url, "experiment": "bench-queries"})
        mlflow_call("log", {"tracking_uri": mlflow_url, "run_id": run["run_id"], "keys": [key], "steps": args.steps,
                            "batch": 1000, "seed": SEED, "chunk_steps": 50})  # fmt: skip
        print(f"   filled MLflow (1 metric x {args.steps:,} steps) in {time.perf_counter() - started:.1f} s")
        env = service_env(url, GRADWATCH_REAPER_INTERVAL_S="0")
        with api_server(env) as server, mlflow_server(mlflow_url) as mlflow_base, httpx.Client(
            base_url=server.url, timeout=120, headers=bench_headers(url)
        ) as client:
            path = f"/api/v1/experiments/{experiment_id}/series"
            kinds = {
                "gradwatch full series (HTTP + JSON decode)": lambda: time_http(
                    client, path, {"metric": METRIC, "layer": LAYER}, args.per_round, args.steps, transfer["full"]),
                f"gradwatch {VIEW_POINTS}-point view (HTTP + JSON decode, max_points)": lambda: time_http(
                    client, path, {"metric": METRIC, "layer": LAYER, "max_points": VIEW_POINTS}, args.per_round,
                    VIEW_POINTS, transfer["view"]),
                "MLflow get_metric_history (tracking server, REST)": lambda: mlflow_call("history", {
                    "tracking_uri": mlflow_base, "run_id": run["run_id"], "key": key, "repeats": args.per_round,
                    "expect": args.steps})["timings_ms"],
                "MLflow get_metric_history (store, no server)": lambda: mlflow_call("history", {
                    "tracking_uri": mlflow_url, "run_id": run["run_id"], "key": key, "repeats": args.per_round,
                    "expect": args.steps})["timings_ms"],
                f"MLflow get-history-bulk-interval max_results={VIEW_POINTS} (REST)": lambda: mlflow_call("interval", {
                    "server": mlflow_base, "run_id": run["run_id"], "key": key, "max_results": VIEW_POINTS,
                    "repeats": args.per_round})["timings_ms"],
            }  # fmt: skip
            for round_ in range(args.rounds):
                for name, measure in kinds.items():
                    timings.setdefault(name, []).extend(measure())
                print(f"   round {round_ + 1} done", flush=True)
    for name, values in timings.items():
        print(f"   {name:<62} {latency(values)}")
    for kind, values in transfer.items():
        name = f"gradwatch {kind} (HTTP only: body received, not decoded)"
        print(f"   {name:<62} {latency(values)}")
    p50 = {name: statistics.median(values) for name, values in timings.items()}
    names = list(timings)
    full, view, mlflow_rest, mlflow_store, mlflow_interval = (p50[n] for n in names)
    http_full = statistics.median(transfer["full"])
    print(f"   gradwatch full series of {args.steps:,} points through HTTP < 100 ms (p50, not decoded: "
          f"{http_full:.1f} ms): {'MET' if http_full < 100 else 'MISSED'}")
    print(f"   for information: MLflow store (no server) / gradwatch view = {mlflow_store / view:.1f}x; "
          f"MLflow bulk-interval ({VIEW_POINTS}) / gradwatch view = {mlflow_interval / view:.1f}x")
    print(ratio_line("queries full series mlflow/gradwatch latency", mlflow_rest / full))
    print(ratio_line(f"queries {VIEW_POINTS}-point view mlflow/gradwatch latency", mlflow_rest / view, 10))


if __name__ == "__main__":
    main()
