"""Load: concurrent clients polling experiment status and reading series through the API
on PostgreSQL and Redis: throughput, p50 and p99 latency, errors.

    python -m bench.load [--clients 50] [--duration 60] [--experiments 8] [--steps 10000] [--poll-ms 1000]

The API runs as production serves it (`uvicorn service.api.main:app`, one process) on a
scratch PostgreSQL database with Redis as its broker. `--experiments` finished experiments
of `--steps` steps (a `loss` series and `grad_mean_abs` of 10 layers each) are stored
first. Then `--clients` httpx async clients, each with a connection of its own, loop for
`--duration` seconds, each over its own experiment in turn through the requests a
dashboard or a pipeline makes:

    GET /experiments/{id}                                      (status poll)
    GET /experiments/{id}/series?metric=loss&max_points=1000
    GET /experiments/{id}                                      (status poll)
    GET /experiments/{id}/series?metric=grad_mean_abs&layer=L&max_points=1000
    GET /health                                                 (database and Redis)

first closed loop (the next request leaves as soon as the previous answer is read: the
most the API can serve), then paced (each client pauses `--poll-ms` ± 50 % after each request,
the interval `gradwatch submit --wait` polls at: 50 such clients are a busy lab), each
phase `--duration` seconds. Latency is from sending a request to having read its body. An
error is any exception or a status other than 200. Goal: p99 < 100 ms, zero errors.

The clients share the machine with the server (on a 2-core machine they take a good part
of one core): the figures are a lower bound on what the API does alone. Each phase prints
the CPU a request cost the API (its processes), PostgreSQL (all its processes) and the
clients (this process), and the ceiling that leaves: cores / their sum, and cores / the
clients' and PostgreSQL's alone, the most any API could serve here. A last phase
(`--floor-duration` s, closed loop) asks for a path no route has, answered 404 without any
I/O: what one request costs the HTTP server and the framework before gradwatch's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.cpu_accounting import CpuShare, postgres_pids, this_process, tree
from bench.common import (
    BENCH_OWNER,
    REDIS_URL,
    api_server,
    bench_headers,
    flush_redis,
    header,
    latency,
    profile,
    ratio_line,
    scratch_database,
    service_env,
)
from bench.ingest import METRIC, probe_batches
from service import store
from service.db.engine import make_engine, make_session_factory
from workers.engine.records import ProbeBatch
from workers.writer import to_chunks

SERIES_LAYERS = 10
# A load's requests: (kind, path, params) for one experiment and one of its layers.
Plan = Callable[[str, int], list[tuple[str, str, dict]]]
GOAL_P99_MS = 100.0


def fill(url: str, experiments: int, n_steps: int) -> list[str]:
    engine = make_engine(url)
    session_factory = make_session_factory(engine)
    ids = []
    batches = probe_batches(n_steps, SERIES_LAYERS, 50)
    with session_factory() as session:
        for index in range(experiments):
            spec = {"name": f"bench-load-{index}", "model": {"type": "mlp"}, "dataset": {"name": "mnist"},
                    "training": {"steps": n_steps}}  # fmt: skip
            record = store.create_experiment(
                session, name=f"bench-load-{index}", tags=["bench"], spec=spec, queue="cpu", owner=BENCH_OWNER
            )
            store.claim_experiment(session, record.id, "bench")
            for start in range(0, len(batches), 40):
                chunks = []
                for batch in batches[start : start + 40]:
                    with_loss = ProbeBatch(batch.steps, {**batch.values, ("loss", None): batch.values[(METRIC, "layers.0.weight")]},
                                           batch.layers, None)  # fmt: skip
                    chunks += to_chunks(with_loss)[0]
                store.write_chunks(session, record.id, chunks, progress_step=int(batches[min(start + 40, len(batches)) - 1].steps[-1]) + 1)
            store.finish_experiment(session, record.id, "succeeded", {"final_loss": 0.1})
            ids.append(record.id)
    engine.dispose()
    return ids


def requests_for(experiment_id: str, layer_index: int) -> list[tuple[str, str, dict]]:
    experiment = f"/api/v1/experiments/{experiment_id}"
    return [
        ("status", experiment, {}),
        ("series loss", f"{experiment}/series", {"metric": "loss", "max_points": 1000}),
        ("status", experiment, {}),
        ("series layer", f"{experiment}/series",
         {"metric": METRIC, "layer": f"layers.{layer_index}.weight", "max_points": 1000}),
        ("health", "/api/v1/health", {}),
    ]  # fmt: skip


def floor_requests(_experiment_id: str, _layer_index: int) -> list[tuple[str, str, dict]]:
    """The stack's own floor: a path no route has, answered 404 by routing without any I/O
    (uvicorn's HTTP parsing, gradwatch's middleware, FastAPI's router and error handler)."""
    return [("no route (404)", "/api/v1/no-such-route", {})]


def new_client(base: str, headers: dict[str, str]) -> httpx.AsyncClient:
    """One client's own connection. Made before the clock starts: building an httpx client
    loads a TLS context (~50 ms here, even for http://), and made mid-run it blocks the
    event loop that times every other client's requests."""
    return httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=1), headers=headers)


async def client_loop(
    client: httpx.AsyncClient, experiment_ids: list[str], deadline: float, think_s: float, seed: int,
    timings: dict[str, list[float]], errors: Counter[str], plan: Plan,
) -> int:  # fmt: skip
    rng = random.Random(seed)
    done = 0
    if think_s:  # pollers are not synchronised: start each at a random point of its interval
        await asyncio.sleep(rng.uniform(0, think_s))
    async with client:
        while time.perf_counter() < deadline:
            experiment_id = experiment_ids[rng.randrange(len(experiment_ids))]
            for kind, path, params in plan(experiment_id, rng.randrange(SERIES_LAYERS)):
                if time.perf_counter() >= deadline:
                    break
                started = time.perf_counter()
                try:
                    response = await client.get(path, params=params)
                    await response.aread()
                    elapsed = (time.perf_counter() - started) * 1000
                    if response.status_code != (404 if plan is floor_requests else 200):
                        errors[f"{kind}: HTTP {response.status_code}"] += 1
                    else:
                        timings[kind].append(elapsed)
                        timings["all"].append(elapsed)
                except httpx.HTTPError as error:
                    errors[f"{kind}: {type(error).__name__}"] += 1
                done += 1
                if think_s:  # ±50 %, so that one slow answer does not line every client up
                    await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))
    return done


def sessions_opened(url: str) -> int:
    """Connections ever opened to this database (PostgreSQL >= 14 counts them)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            return int(connection.execute(sa.text(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )).scalar_one())  # fmt: skip
    finally:
        engine.dispose()


async def run_load(
    base: str, experiment_ids: list[str], clients: int, duration_s: float, think_s: float, headers: dict[str, str],
    plan: Plan = requests_for,
) -> tuple[dict[str, list[float]], Counter[str], float]:
    timings: dict[str, list[float]] = {"all": []} | {kind: [] for kind, _, _ in plan(experiment_ids[0], 0)}
    errors: Counter[str] = Counter()
    pool = [new_client(base, headers) for _ in range(clients)]
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(
        *(client_loop(client, experiment_ids, deadline, think_s, seed, timings, errors, plan)
          for seed, client in enumerate(pool))
    )
    return timings, errors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--experiments", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--poll-ms", type=float, default=1000.0,
                        help="second phase: each client pauses this long after each request, the CLI's poll "
                             "interval (0: closed loop only)")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy during the load")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="another gradwatch working tree (e.g. `git worktree add /tmp/base main`) to load "
                             "first in each phase, for a side-by-side comparison")  # fmt: skip
    parser.add_argument("--floor-duration", type=float, default=10.0,
                        help="last phase: seconds of closed loop on a path no route has, the stack's floor (0: skip)")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes serving the API")
    args = parser.parse_args()

    header(f"load: {args.clients} concurrent clients for {args.duration:g} s, API on PostgreSQL + Redis")
    flush_redis()
    with scratch_database("load") as url:
        experiment_ids = fill(url, args.experiments, args.steps)
        print(f"   {args.experiments} experiments of {args.steps:,} steps x {SERIES_LAYERS + 1} series; "
              f"{args.api_workers} uvicorn process(es); broker {REDIS_URL}")  # fmt: skip
        env = service_env(url, REDIS_URL, GRADWATCH_REAPER_INTERVAL_S="10")
        # One write token shared by every client: each request pays the token lookup.
        headers = bench_headers(url)
        phases = [("closed loop", 0.0, requests_for, args.duration)]
        if args.poll_ms > 0:
            phases.append(("paced", args.poll_ms / 1000, requests_for, args.duration))
        if args.floor_duration > 0:
            phases.append(("floor (a path no route has, closed loop)", 0.0, floor_requests, args.floor_duration))
        versions: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.baseline:
            # Side by side: each phase runs on the baseline, then on this checkout, on the
            # same database and the same (shared, loaded) machine, a minute apart.
            versions.insert(0, (f"baseline {args.baseline}", Path(args.baseline)))
        results = []
        connections: list[int] = []
        for think_s_name, think_s, plan, duration_s in phases:
            for version, checkout in versions:
                with api_server(env, ready_path="/api/v1/health", workers=args.api_workers, checkout=checkout) as server:
                    asyncio.run(run_load(server.url, experiment_ids, min(args.clients, 5), 3.0, 0.0, headers))  # warm-up
                    profiled = args.profile and not think_s and plan is requests_for
                    sessions_before = sessions_opened(url)
                    cpu = CpuShare(api=tree(server.pid), postgres=postgres_pids, clients=this_process)
                    with profile(server.pid, duration_s) if profiled else contextlib.nullcontext(), cpu:
                        outcome = asyncio.run(
                            run_load(server.url, experiment_ids, args.clients, duration_s, think_s, headers, plan))  # fmt: skip
                    results.append((f"{think_s_name}, {version}", think_s, *outcome, cpu, plan is floor_requests))
                    connections.append(sessions_opened(url) - sessions_before - 1)  # less its own
    for (name, think_s, timings, errors, elapsed, cpu, floor), opened in zip(results, connections, strict=True):
        report(name, think_s, timings, errors, elapsed, goal=not floor)
        report_cpu(cpu, len(timings["all"]) + sum(errors.values()))
        # Each new connection is a PostgreSQL backend started and authenticated inside some
        # request: the load-independent trace of a pool that closes and reopens connections.
        print(f"   new PostgreSQL connections during the phase: {opened} "
              f"({100 * opened / max(1, len(timings['all'])):.1f} per 100 requests)")  # fmt: skip
    if args.baseline:
        for index in range(0, len(results), 2):
            (_, _, base_t, _, base_s, _, _), (name, _, t, _, s, _, _) = results[index], results[index + 1]
            print(ratio_line(f"load {name}: requests/s over the baseline's", (len(t["all"]) / s) / (len(base_t["all"]) / base_s), 1))
            print(ratio_line(f"load {name}: baseline p99 / this p99", latency(base_t["all"]).p99_ms / latency(t["all"]).p99_ms, 1))


def report_cpu(cpu: CpuShare, requests: int) -> None:
    """CPU per request by whom, and what that allows on this machine's cores: the most any
    API could serve of this request mix, with these clients and this database beside it,
    is cores / (clients' + PostgreSQL's CPU per request), even if the API cost nothing."""
    per_request = {name: 1000 * seconds / max(1, requests) for name, seconds in cpu.seconds.items()}
    cores = os.cpu_count() or 1
    print("   CPU per request: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_request.items())
          + f" ({cpu}; {cores} cores)")  # fmt: skip
    others = per_request["clients"] + per_request["postgres"]
    print(f"   this machine's ceiling for this mix: {1000 * cores / sum(per_request.values()):,.0f} requests/s at "
          f"these costs; {1000 * cores / others:,.0f} requests/s with an API that cost no CPU at all "
          "(the clients and PostgreSQL alone)")  # fmt: skip


def report(
    name: str, think_s: float, timings: dict[str, list[float]], errors: Counter[str], elapsed: float, goal: bool = True
) -> None:
    total = len(timings["all"]) + sum(errors.values())
    pace = "no pause between requests" if not think_s else f"each client pauses {think_s * 1000:g} ms after each request"
    print(f"   -- {name} ({pace}): {total:,} requests in {elapsed:.1f} s: {total / elapsed:,.0f} requests/s, "
          f"{sum(errors.values())} errors")  # fmt: skip
    for kind, values in timings.items():
        if values:
            print(f"   {kind:<14} {latency(values)}  p99 {latency(values).p99_ms:8.1f} ms")
    for what, count in errors.most_common():
        print(f"   error: {what} x {count}")
    if not goal:
        return
    overall = latency(timings["all"])
    met = overall.p99_ms < GOAL_P99_MS and not errors
    print(f"   goal p99 < {GOAL_P99_MS:g} ms and zero errors: {'MET' if met else 'MISSED'} "
          f"(p99 {overall.p99_ms:.1f} ms, {sum(errors.values())} errors)")  # fmt: skip
    # The ratio line: the goal's p99 over the measured one (>= 1x means the goal is met).
    print(ratio_line(f"load {name} p99 goal/measured ({GOAL_P99_MS:g} ms / {overall.p99_ms:.1f} ms, "
                     f"{total / elapsed:,.0f} req/s, {sum(errors.values())} errors)", GOAL_P99_MS / overall.p99_ms, 1))  # fmt: skip

if __name__ == "__main__":
    main()
