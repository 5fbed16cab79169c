"""Series queries through HTTP on PostgreSQL: the analysis issue's performance goals.

    python -m bench.series_query [--steps 100000] [--layers 10] [--requests 200]

Writes one experiment of `--steps` steps × `--layers` layers of `grad_mean_abs` through the
store (chunks of 50 steps, as the worker flushes them) into a fresh PostgreSQL database,
starts the API under uvicorn on a free port, and times over real HTTP (httpx):

- `series?metric=grad_mean_abs&max_points=1000` (every layer, M4-thinned): goal p95 < 50 ms;
  measured once right after the writes and again after VACUUM (see `main`), and with a
  step range that cuts chunks at both ends;
- the same for one layer (`layer=layers.0.weight&max_points=1000`), for information;
- one full series of `--steps` points (`layer=layers.0.weight`, no thinning): goal < 100 ms;
- for information: the same with `agg=lttb` and `agg=mean`, `/profile` and `/summary`.

Needs PostgreSQL (GRADWATCH_BENCH_POSTGRES_URL, default postgresql+psycopg://root@127.0.0.1:5432/test,
used only to create and drop a scratch database).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench.common import BENCH_OWNER, bench_headers, ratio_line
from service import store
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from service.store.records import SeriesChunk

SERVER_URL = os.environ.get("GRADWATCH_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
FLUSH = 50  # steps per chunk, the worker's default flush


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fill(url: str, n_steps: int, n_layers: int) -> str:
    """One experiment with `n_layers` series of `n_steps` points (plus a global loss)."""
    engine = make_engine(url)
    rng = np.random.default_rng(0)
    with make_session_factory(engine)() as session:
        spec = {"name": "bench", "model": {"type": "mlp", "hidden_sizes": [100] * (n_layers - 1)},
                "dataset": {"name": "mnist"}, "training": {"steps": n_steps}}
        record = store.create_experiment(session, name="bench", tags=[], spec=spec, queue="cpu", owner=BENCH_OWNER)
        store.claim_experiment(session, record.id, "bench")
        steps = np.arange(n_steps, dtype=np.int64)
        # Gradient-like magnitudes: a decaying random walk per layer, a spike or two.
        values = np.exp(np.cumsum(rng.normal(0, 0.01, size=(n_steps, n_layers)), axis=0)) * np.logspace(-4, -2, n_layers)
        values[rng.integers(0, n_steps, 5), rng.integers(0, n_layers, 5)] *= 1e4
        loss = np.exp(-steps / n_steps) + rng.normal(0, 0.01, n_steps)
        started = time.perf_counter()
        batch: list[SeriesChunk] = []
        for start in range(0, n_steps, FLUSH):
            rows = slice(start, start + FLUSH)
            batch += [
                SeriesChunk("grad_mean_abs", f"layers.{i}.weight", i, steps[rows], np.ascontiguousarray(values[rows, i]))
                for i in range(n_layers)
            ]
            batch.append(SeriesChunk("loss", None, -1, steps[rows], loss[rows]))
            if len(batch) >= 2000:
                store.write_chunks(session, record.id, batch, progress_step=start)
                batch = []
        if batch:
            store.write_chunks(session, record.id, batch, progress_step=n_steps - 1)
        store.finish_experiment(session, record.id, "succeeded", {"final_loss": float(loss[-1])})
        elapsed = time.perf_counter() - started
        points = n_steps * (n_layers + 1)
        print(f"wrote {points:,} points in {elapsed:.1f} s ({points / elapsed:,.0f} points/s)")
    engine.dispose()
    return record.id


def _vacuum(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")  # VACUUM runs outside a transaction
    with engine.connect() as connection:
        connection.execute(sa.text("VACUUM (ANALYZE) point_chunks"))
    engine.dispose()


def _thinned(n_layers: int) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        body = response.json()
        assert response.status_code == 200 and len(body["series"]) == n_layers
        assert all(len(s["steps"]) <= 1000 for s in body["series"])

    return check


def _time(client: httpx.Client, path: str, params: dict | list, n: int, check: Callable[[httpx.Response], None]) -> list[float]:
    for _ in range(min(5, n)):  # warm-up: connection, caches, first-call imports
        check(client.get(path, params=params))
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path, params=params)
        _ = response.content
        timings.append((time.perf_counter() - started) * 1000)
        check(response)
    return timings


def _report(name: str, timings: list[float], goal_ms: float | None = None) -> float:
    ordered = sorted(timings)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    verdict = "" if goal_ms is None else (f"  goal p95 < {goal_ms:g} ms: " + ("MET" if p95 < goal_ms else "MISSED"))
    print(f"{name:<62} n={len(timings):<4} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  max {ordered[-1]:7.1f} ms{verdict}")
    return p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--aggregated-requests", type=int, default=50,
                        help="requests per aggregated read (mean, profile, LTTB; summary: at most 30)")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="a checkout of another gradwatch version (e.g. `git worktree add /tmp/base main`): "
                             "its API serves the same database beside this one, for side-by-side timings of the "
                             "aggregated reads")  # fmt: skip
    args = parser.parse_args()

    name = f"gradwatch_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    server = None
    try:
        upgrade(url)
        experiment_id = _fill(url, args.steps, args.layers)
        port = _free_port()
        home = tempfile.mkdtemp(prefix="gradwatch-bench-")
        env = {**os.environ, "GRADWATCH_DATABASE_URL": url, "GRADWATCH_HOME": home, "GRADWATCH_REAPER_INTERVAL_S": "0"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.api.main:app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--no-access-log"],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30.0, headers=bench_headers(url)) as client:
            _wait_ready(client, experiment_id, server, "the API")

            series = f"/api/v1/experiments/{experiment_id}/series"
            everything = {"metric": "grad_mean_abs", "max_points": 1000}
            print(f"\n{args.steps:,} steps × {args.layers} layers on PostgreSQL, HTTP via uvicorn "
                  f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})")
            # Right after the writes the table's pages are not yet marked all-visible, so the
            # thinned read's index-only scan still visits the table for each chunk. VACUUM
            # marks them, as autovacuum does by itself about a minute after a run's inserts
            # (PostgreSQL >= 13; this development server may have autovacuum off); the
            # figures below it are that steady state.
            _report("series max_points=1000 (minmax), all layers, before VACUUM",
                    _time(client, series, everything, max(20, args.requests // 4), _thinned(args.layers)))
            _vacuum(url)

            thinned = _thinned(args.layers)

            def full(response: httpx.Response) -> None:
                assert response.status_code == 200 and len(response.json()["series"][0]["steps"]) == args.steps

            def ok(response: httpx.Response) -> None:
                assert response.status_code == 200, response.text

            view_p95 = _report("series max_points=1000 (minmax), all layers",
                               _time(client, series, everything, args.requests, thinned), 50)
            _report("series max_points=1000 (minmax), all layers, step range",
                    _time(client, series, everything | {"step_min": 1234, "step_max": 98765}, args.requests, thinned), 50)
            def one_thinned(response: httpx.Response) -> None:
                body = response.json()
                assert response.status_code == 200 and len(body["series"]) == 1 and len(body["series"][0]["steps"]) <= 1000

            _report("series max_points=1000 (minmax), one layer",
                    _time(client, series, {"metric": "grad_mean_abs", "layer": "layers.0.weight", "max_points": 1000},
                          args.requests, one_thinned), 50)
            _report(f"series full, one layer ({args.steps:,} points)",
                    _time(client, series, {"metric": "grad_mean_abs", "layer": "layers.0.weight"}, 30, full), 100)
            analysis = f"/api/v1/experiments/{experiment_id}"
            n = args.aggregated_requests
            aggregated = [
                ("series max_points=1000 agg=mean, all layers", series,
                 {"metric": "grad_mean_abs", "max_points": 1000, "agg": "mean"}, n, thinned),
                ("series max_points=1000 agg=mean, all layers, step range", series,
                 {"metric": "grad_mean_abs", "max_points": 1000, "agg": "mean", "step_min": 1234, "step_max": 98765},
                 n, thinned),
                ("series max_points=1000 agg=mean, one layer", series,
                 {"metric": "grad_mean_abs", "layer": "layers.0.weight", "max_points": 1000, "agg": "mean"}, n,
                 one_thinned),
                ("profile max_points=500", f"{analysis}/profile", {"max_points": 500}, n, ok),
                ("series max_points=1000 agg=lttb, all layers", series,
                 {"metric": "grad_mean_abs", "max_points": 1000, "agg": "lttb"}, n, thinned),
                ("summary", f"{analysis}/summary", {}, min(n, 30), ok),
            ]  # fmt: skip
            with _baseline_client(args.baseline, env, experiment_id, bench_headers(url)) as baseline:
                # The summary is cached per (experiment, max_points) until the run's data
                # changes: its first request, and requests each with a max_points not asked
                # before, are computed; the timed `summary` row below is then all hits.
                computed = [("first request", 500, 1), ("a new max_points each request", 501, min(n, 30))]
                for what, first_max_points, count in computed:  # 500, the default: the `summary` row's
                    _report(f"summary, {what} (computed)",
                            _time_computed(client, f"{analysis}/summary", first_max_points, count, ok))
                    if baseline is not None:
                        _report(f"  baseline ({args.baseline})",
                                _time_computed(baseline, f"{analysis}/summary", first_max_points, count, ok))
                for label, path, params, n, check in aggregated:
                    if baseline is None:
                        _report(label, _time(client, path, params, n, check), 50)
                        continue
                    # Side by side: the two servers answer alternately, so both see the
                    # same machine load; the ratio is the baseline's p95 over this one's.
                    ours, theirs = _time_pair(client, baseline, path, params, n, check)
                    mine_p95 = _report(label, ours, 50)
                    base_p95 = _report(f"  baseline ({args.baseline})", theirs)
                    print(ratio_line(f"series_query {label}: baseline p95 / this p95", base_p95 / mine_p95, 1.0))
            print(ratio_line("series_query 1000-point view, goal/p95 (50 ms)", 50.0 / view_p95, 1.0))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _wait_ready(client: httpx.Client, experiment_id: str, server: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get(f"/api/v1/experiments/{experiment_id}").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.2)


@contextlib.contextmanager
def _baseline_client(
    checkout: str | None, env: dict[str, str], experiment_id: str, headers: dict[str, str]
) -> Iterator[httpx.Client | None]:
    """A client of the API served from `checkout` (another version of gradwatch) on the
    same database, or None without one."""
    if checkout is None:
        yield None
        return
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.api.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        env={**env, "PYTHONPATH": checkout}, cwd=checkout,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0, headers=headers) as client:
            _wait_ready(client, experiment_id, server, f"the baseline API from {checkout}")
            yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


def _time_computed(
    client: httpx.Client, path: str, first_max_points: int, n: int, check: Callable[[httpx.Response], None]
) -> list[float]:
    """`n` summaries that no cache holds: each asks for a max_points (`first_max_points`
    up) that the server was not asked for before."""
    timings = []
    for max_points in range(first_max_points, first_max_points + n):
        started = time.perf_counter()
        response = client.get(path, params={"max_points": max_points})
        _ = response.content
        timings.append((time.perf_counter() - started) * 1000)
        check(response)
    return timings


def _time_pair(
    client: httpx.Client, baseline: httpx.Client, path: str, params: dict, n: int,
    check: Callable[[httpx.Response], None],
) -> tuple[list[float], list[float]]:  # fmt: skip
    """`_time` on both servers, one request to each in turn."""
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(min(5, n)):
        check(client.get(path, params=params))
        check(baseline.get(path, params=params))
    for _ in range(n):
        for which, timings in ((client, ours), (baseline, theirs)):
            started = time.perf_counter()
            response = which.get(path, params=params)
            _ = response.content
            timings.append((time.perf_counter() - started) * 1000)
            check(response)
    return ours, theirs


if __name__ == "__main__":
    main()
