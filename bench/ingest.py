"""Ingestion: the worker's probe writer into PostgreSQL against MLflow's `log_batch` into
the same PostgreSQL server: points per second.

    python -m bench.ingest [--steps 100000] [--series 10] [--repeats 2]

One experiment of `--steps` steps × `--series` series (1,000,000 points by default),
`grad_mean_abs` of layers `layers.0.weight` … as the engine reports it:

- **gradwatch**: the points arrive as the engine hands them out, one `ProbeBatch` per flush
  of `GRADWATCH_FLUSH_EVERY` (50) steps, to `workers.writer.ProbeWriter.on_flush`, the
  writer a worker trains with; it converts them to chunks and stores each batch in one
  transaction (`service.store.write_chunks`). Timed from the first `on_flush` until
  `close()` returns, when every batch is committed. The batches are built beforehand (the
  engine builds them during training, not the writer).
- **MLflow**: the same values, logged with MLflow's own client (`MlflowClient.log_batch`,
  1,000 metrics per call, its limit) into MLflow's tracking store on the same PostgreSQL
  server (a database of its own, migrated by MLflow), one metric key per series. Timed
  over the `log_batch` calls alone (building the `Metric` objects is left out, in MLflow's
  favour; the wall time with them is printed too). MLflow runs in its own interpreter
  (see bench/common.py), in the same invocation.

Arms alternate, gradwatch first and last (`--repeats` MLflow runs, one more gradwatch
run), each a new experiment / run in the same database; the ratio is of the median rates. Both sides use psycopg 3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.common import header, mlflow_call, ratio_line, scratch_database
from bench.mlflow_arm import values_for
from service import store
from service.config import settings
from service.db.engine import make_engine, make_session_factory
from workers.engine.records import ProbeBatch
from workers.writer import ProbeWriter

METRIC = "grad_mean_abs"
SEED = 0
MLFLOW_BATCH = 1000  # MLflow's MAX_METRICS_PER_BATCH


def layers(count: int) -> tuple[str, ...]:
    return tuple(f"layers.{i}.weight" for i in range(count))


def mlflow_keys(count: int) -> list[str]:
    return [f"{METRIC}/{layer}" for layer in layers(count)]


def probe_batches(n_steps: int, n_series: int, flush: int) -> list[ProbeBatch]:
    """What the engine hands the writer: a batch per `flush` steps (float64 values)."""
    names = layers(n_series)
    batches = []
    for first in range(0, n_steps, flush):
        steps = np.arange(first, min(first + flush, n_steps), dtype=np.int64)
        values = values_for(mlflow_keys(n_series), steps, SEED)  # (S, series)
        batches.append(
            ProbeBatch(
                steps=steps,
                values={(METRIC, name): np.ascontiguousarray(values[:, i]) for i, name in enumerate(names)},
                layers=names,
                timesteps=None,
            )
        )
    return batches


def gradwatch_arm(url: str, n_steps: int, n_series: int, flush: int, repeat: int) -> float:
    """Seconds for the writer to store every batch of one new experiment."""
    engine = make_engine(url)
    session_factory = make_session_factory(engine)
    with session_factory() as session:
        spec = {"name": "bench-ingest", "model": {"type": "mlp"}, "dataset": {"name": "mnist"},
                "training": {"steps": n_steps}}  # fmt: skip
        record = store.create_experiment(session, name=f"bench-ingest-{repeat}", tags=[], spec=spec, queue="cpu")
        store.claim_experiment(session, record.id, "bench")
    batches = probe_batches(n_steps, n_series, flush)
    started = time.perf_counter()
    with ProbeWriter(record.id, session_factory, poll_s=settings.worker_poll_s) as writer:
        for batch in batches:
            writer.on_flush(batch)
    elapsed = time.perf_counter() - started
    with session_factory() as session:  # every point is there, once
        series = store.read_series(session, record.id, METRIC, None)
        stored = sum(len(s.steps) for s in series)
        if stored != n_steps * n_series:
            raise SystemExit(f"gradwatch stored {stored} points, expected {n_steps * n_series}")
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="MLflow runs; gradwatch runs one more, around them")
    args = parser.parse_args()
    points = args.steps * args.series
    flush = settings.flush_every

    header("ingestion: gradwatch's worker writer vs MLflow log_batch, both into PostgreSQL")
    print(f"   {args.steps:,} steps x {args.series} series = {points:,} points per arm and repeat; "
          f"gradwatch flushes every {flush} steps, MLflow logs {MLFLOW_BATCH} metrics per call")  # fmt: skip
    rates: dict[str, list[float]] = {"gradwatch": [], "mlflow": []}
    with scratch_database("ingest") as gradwatch_url, scratch_database("mlflow", migrate=False) as mlflow_url:
        tracking_uri = mlflow_url
        gradwatch_arm(gradwatch_url, 1000, args.series, flush, -1)  # warm-up: connections, imports

        def run_gradwatch(repeat: int) -> None:
            seconds = gradwatch_arm(gradwatch_url, args.steps, args.series, flush, repeat)
            rates["gradwatch"].append(points / seconds)
            print(f"   gradwatch {points / seconds:12,.0f} points/s ({seconds:.2f} s)", flush=True)

        # gradwatch, MLflow, gradwatch, …, gradwatch: MLflow's long runs are bracketed.
        run_gradwatch(0)
        for repeat in range(args.repeats):
            run = mlflow_call("setup", {"tracking_uri": tracking_uri, "experiment": f"bench-ingest-{repeat}"})
            logged = mlflow_call("log", {"tracking_uri": tracking_uri, "run_id": run["run_id"],
                                         "keys": mlflow_keys(args.series), "steps": args.steps,
                                         "batch": MLFLOW_BATCH, "seed": SEED, "chunk_steps": flush})  # fmt: skip
            rates["mlflow"].append(logged["points"] / logged["seconds_log_batch"])
            print(f"   mlflow    {rates['mlflow'][-1]:12,.0f} points/s "
                  f"({logged['seconds_log_batch']:.2f} s in log_batch, {logged['seconds_wall']:.2f} s "
                  f"with building the Metric objects)", flush=True)  # fmt: skip
            run_gradwatch(repeat + 1)
    gradwatch, mlflow = statistics.median(rates["gradwatch"]), statistics.median(rates["mlflow"])
    print(f"   gradwatch (worker writer -> PostgreSQL)   {gradwatch:12,.0f} points/s (median of {len(rates['gradwatch'])})")
    print(f"   MLflow (log_batch -> PostgreSQL)           {mlflow:12,.0f} points/s (median of {args.repeats})")
    print(f"   gradwatch goal >= 200,000 points/s sustained: {'MET' if gradwatch >= 200_000 else 'MISSED'}")
    print(ratio_line("ingest gradwatch/mlflow points/s", gradwatch / mlflow, 10))


if __name__ == "__main__":
    main()
