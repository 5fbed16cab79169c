"""Scale-out: the same 8 small runs with 1 Celery worker process and with 2: wall time.

    python -m bench.scale_out [--runs 8] [--steps 1500] [--repeats 1] [--sweep]

The product as deployed: the API under uvicorn, Redis as the broker, PostgreSQL as the
database, and real worker processes,

    celery -A workers.celery_app worker --queues=cpu --concurrency=1 --pool=prefork \\
        --hostname=bench<i>@%h --without-mingle --without-gossip

(what `gradwatch worker` runs, each with a hostname of its own so two can run side by
side). The workers are started and ready before the clock starts; then `--runs`
experiments are submitted over HTTP (`POST /api/v1/experiments`, or one
`POST /api/v1/sweeps` over `training.seed` with `--sweep`) and the clock stops when the
API reports all of them finished. Each run trains the seed's MLP 784-30-30-10 (sigmoid,
SGD, batch 64) on MNIST (the test split's 9,000 training images) for `--steps` steps with
every probe recorded and stored.

Fairness: every worker runs with OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1 (torch uses one
thread), so one worker uses one core and two workers can use two; without it, one worker
would already spread a run over both cores. The rest of the machine (API, PostgreSQL,
Redis, other users' load) shares the same cores. The configurations alternate, 1 then 2,
`--repeats` times; the ratio is of median wall times. Goal: >= 1.8x on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.common import REDIS_URL, REPO_ROOT, api_server, bench_headers, flush_redis, header, ratio_line, scratch_database, service_env, stop
from bench.training_loop import data_dir

FINISHED = ("succeeded", "failed", "diverged", "cancelled")


def spec(index: int, steps: int) -> dict:
    return {
        "name": f"bench-scale-{index}",
        "tags": ["bench-scale-out"],
        "model": {"type": "mlp", "hidden_sizes": [30, 30], "activation": "sigmoid"},
        "dataset": {"name": "mnist", "split": "test"},
        "training": {"optimizer": "sgd", "lr": 0.5, "batch_size": 64, "steps": steps, "seed": index},
        "device": "cpu",
    }


@contextlib.contextmanager
def workers(count: int, env: dict[str, str], logs: Path) -> Iterator[None]:
    """`count` Celery worker processes of one pool process each, ready to take tasks."""
    processes, files = [], []
    try:
        for index in range(count):
            log = logs / f"worker{index}-{time.monotonic_ns()}.log"
            files.append(log)
            handle = open(log, "wb")  # noqa: SIM115 - the process owns it until it stops
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--queues=cpu",
                 "--concurrency=1", "--pool=prefork", f"--hostname=bench{index}@%h", "--loglevel=INFO",
                 "--without-mingle", "--without-gossip"],
                env=env, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT,
            ))  # fmt: skip
            handle.close()
        deadline = time.monotonic() + 120
        while not all(b" ready." in log.read_bytes() for log in files):
            if any(process.poll() is not None for process in processes) or time.monotonic() > deadline:
                raise SystemExit("a worker did not start:\n" + "\n".join(log.read_text()[-2000:] for log in files))
            time.sleep(0.2)
        yield
    finally:
        for process in processes:
            stop(process, grace_s=30)


def run_all(client: httpx.Client, runs: int, steps: int, sweep: bool) -> tuple[float, list[dict]]:
    """Submit `runs` experiments and wait for every one to finish; wall seconds."""
    started = time.perf_counter()
    if sweep:
        base = spec(0, steps)
        response = client.post("/api/v1/sweeps", json={"name": "bench-scale-out", "base": base,
                                                        "grid": {"training.seed": list(range(runs))}})  # fmt: skip
        response.raise_for_status()
        body = response.json()
        ids = [member["id"] for member in body.get("experiments", body.get("members", []))]
    else:
        ids = []
        for index in range(runs):
            response = client.post("/api/v1/experiments", json=spec(index, steps))
            response.raise_for_status()
            ids.append(response.json()["id"])
    if len(ids) != runs:
        raise SystemExit(f"submitted {len(ids)} experiments, expected {runs}")
    pending, finished = set(ids), []
    while pending:
        time.sleep(0.2)
        for experiment_id in list(pending):
            experiment = client.get(f"/api/v1/experiments/{experiment_id}").json()
            if experiment["status"] in FINISHED:
                pending.discard(experiment_id)
                finished.append(experiment)
    elapsed = time.perf_counter() - started
    failed = [e for e in finished if e["status"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} runs did not succeed: {[(e['id'], e['status'], e['error']) for e in failed]}")
    return elapsed, finished


CALIBRATION = "import time\nt=time.perf_counter()\nx=0\nfor i in range({n}): x+=i*i\n"


def parallel_ceiling(processes: int, total: int = 12_000_000) -> float:
    """Seconds for `processes` plain Python processes to share a fixed CPU-bound job: the
    speed-up two cores give at this moment, with everything else on the machine."""
    started = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-c", CALIBRATION.format(n=total // processes)]) for _ in range(processes)]
    for process in running:
        process.wait()
    return time.perf_counter() - started


def print_timeline(finished: list[dict]) -> None:
    from datetime import datetime

    created = min(datetime.fromisoformat(e["created_at"]) for e in finished)
    for e in sorted(finished, key=lambda e: e["started_at"]):
        start = (datetime.fromisoformat(e["started_at"]) - created).total_seconds()
        end = (datetime.fromisoformat(e["finished_at"]) - created).total_seconds()
        print(f"     {e['name']:<16} queued→started {start:6.1f} s, finished {end:6.1f} s ({end - start:5.1f} s) {e.get('worker') or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sweep", action="store_true", help="submit one sweep instead of separate experiments")
    parser.add_argument("--timeline", action="store_true", help="print when each run started and finished, and where")
    args = parser.parse_args()

    header(f"scale-out: {args.runs} runs with 1 and with 2 Celery worker processes (Redis + PostgreSQL)")
    print(f"   each run: MLP 784-30-30-10 sigmoid, MNIST, {args.steps:,} steps, every probe stored; "
          f"workers with OMP_NUM_THREADS=1; submitted as {'one sweep' if args.sweep else 'separate experiments'}")  # fmt: skip
    walls: dict[int, list[float]] = {1: [], 2: []}
    ceiling: dict[int, list[float]] = {1: [], 2: []}
    logs = Path(tempfile.mkdtemp(prefix="gradwatch-bench-scale-"))
    flush_redis()
    with scratch_database("scale") as url:
        env = service_env(url, REDIS_URL, GRADWATCH_DATA_DIR=data_dir(), GRADWATCH_ALLOW_DOWNLOAD="false",
                          OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # fmt: skip
        with api_server(env, ready_path="/api/v1/health") as server, httpx.Client(
            base_url=server.url, timeout=30, headers=bench_headers(url)
        ) as client:
            with workers(1, env, logs):  # warm-up: the page cache holds torch and MNIST for both configurations
                run_all(client, 1, 50, sweep=False)
            for _ in range(args.repeats):
                for count in (1, 2):
                    ceiling[count].append(parallel_ceiling(count))
                for count in (1, 2):
                    with workers(count, env, logs):
                        # Warm the workers: a pool child imports torch on its first task
                        # (never in the parent, which forks); one short run per worker.
                        run_all(client, count, 20, sweep=False)
                        seconds, finished = run_all(client, args.runs, args.steps, args.sweep)
                    walls[count].append(seconds)
                    if args.timeline:
                        print_timeline(finished)
                    hosts = sorted({e.get("worker") or "?" for e in finished})
                    print(f"   {count} worker(s): {seconds:6.1f} s for {args.runs} runs "
                          f"({args.runs * args.steps / seconds:,.0f} steps/s overall)" + (f"; trained by {len(hosts)} workers" if hosts != ["?"] else ""), flush=True)  # fmt: skip
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"   1 worker  {one:6.1f} s, 2 workers {two:6.1f} s (medians of {args.repeats})")
    cpu_one, cpu_two = statistics.median(ceiling[1]), statistics.median(ceiling[2])
    print(f"   the machine's own ceiling just before: the same CPU-bound work in 1 process {cpu_one:.2f} s, "
          f"split over 2 processes {cpu_two:.2f} s: {cpu_one / cpu_two:.2f}x (what 2 cores give right now)")
    print(f"   scale-out as a share of that ceiling: {(one / two) / (cpu_one / cpu_two):.0%}")
    print(ratio_line("scale_out wall 1 worker/2 workers", one / two, 1.8))


if __name__ == "__main__":
    main()
