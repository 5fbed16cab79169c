"""What checkpoints cost, and how soon a run whose worker died moves again.

    python -m bench.checkpoint [--repeats 3] [--scale 1.0] [--no-recovery]

Cost: the benchmark's two workloads (bench/probe_overhead.py: MLP 784-100-100-100-10 on
MNIST, batch 64, SGD; LSTM 64 on the adding problem T = 50, Adam, norm clipping), each
trained by `train()` with every probe at every step and the API's default flush
(GRADWATCH_FLUSH_EVERY = 50), in two arms, interleaved and repeated:
- off: `logging.checkpoint_every: 0`;
- auto: the default interval (`workers.spec.checkpoint_interval` for a run of that many
  steps: a few per run, at most 20 flushes apart), each checkpoint serialised as the
  worker does it (`to_bytes`, on the training thread) and handed to a sink standing in
  for the writer, whose database write runs on its own thread.
Steps/s are timed by `should_stop` (before every step) after a warm-up, in wall time and in
the process's CPU time; the ratio is the median of the repeats' paired auto / off ratios of
CPU time (steadier than wall time on a shared machine; both are printed), pairs run in
alternating order (goal >= 0.98: at most 2 % slower).

Recovery (unless --no-recovery): the time from a worker's death to the run moving again
(its next attempt's progress past the step it resumed from), on both stacks:
- PostgreSQL + Redis with two Celery workers: SIGKILL of the training worker (found by
  the reaper after GRADWATCH_HEARTBEAT_STALE_S = 5 s), then SIGTERM (handed back at once);
- the embedded `gradwatch up` (SQLite, filesystem broker): SIGKILL of its worker, which
  the supervisor restarts, and the reaper requeues the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.common import REDIS_URL, REPO_ROOT, api_server, bench_headers, flush_redis, free_port, header, ratio_line
from bench.common import scratch_database, service_env, stop, wait_http
from bench.probe_overhead import WARMUP, workloads
from service.config import Settings
from workers.engine import ProbeConfig, RunConfig, train
from workers.engine.checkpoint import Checkpointing
from workers.spec import checkpoint_interval

FLUSH_EVERY = 50  # GRADWATCH_FLUSH_EVERY's default
STALE_S = 5.0


def timed_run(config: RunConfig, steps: int, every: int) -> tuple[float, float, int, int, float]:
    """(steps/s of wall time, steps/s of the process's CPU time, checkpoints taken, bytes of
    the last one, direct cost as a fraction of the training time) of one `train()`.

    CPU time counts every thread of the process (the checkpoint's serialisation included)
    and not the time other processes held the cores, so on a shared machine its ratio is
    the steadier one. The direct cost: the steps that took a checkpoint, less the flush
    steps that did not, in medians, times the count, over the whole time."""
    config.training.steps = steps
    config.probes = ProbeConfig(flush_every=FLUSH_EVERY, timesteps_every=10, max_timesteps=100)
    stamps: list[float] = []
    cpu: list[float] = []
    sizes: list[int] = []

    def should_stop() -> bool:
        stamps.append(time.perf_counter())
        if len(stamps) in (WARMUP + 1, steps):  # the timed span's ends
            cpu.append(time.process_time())
        return False

    checkpointing = Checkpointing(every=every, save=lambda step, payload: sizes.append(len(payload))) if every else None
    train(config, lambda batch: None, should_stop, checkpointing)
    elapsed = stamps[-1] - stamps[WARMUP]
    direct = 0.0
    if every:
        # stamps[k] is taken before step k; a checkpoint after k steps falls in stamps[k] - stamps[k - 1].
        at = [stamps[k] - stamps[k - 1] for k in range(every, steps, every)]
        flushes = [stamps[k] - stamps[k - 1] for k in range(FLUSH_EVERY, steps, FLUSH_EVERY) if k % every]
        if at and flushes:
            direct = max(0.0, statistics.median(at) - statistics.median(flushes)) * len(at) / elapsed
    timed_steps = steps - 1 - WARMUP
    return timed_steps / elapsed, timed_steps / (cpu[-1] - cpu[0]), len(sizes), sizes[-1] if sizes else 0, direct


def cost(repeats: int, scale: float) -> float:
    worst = float("inf")
    for name, (config, steps) in workloads("cpu").items():
        steps = max(4 * FLUSH_EVERY, int(steps * scale * 10))
        spec = {"training": {"steps": steps}}
        every = checkpoint_interval(spec, Settings(), FLUSH_EVERY)
        rates: dict[str, list[float]] = {"off": [], "auto": []}
        cpu_rates: dict[str, list[float]] = {"off": [], "auto": []}
        taken = size = 0
        directs: list[float] = []
        for repeat in range(repeats):
            # Pairs in alternating order (off, auto), (auto, off), …: a load that rises or
            # falls during the run then favours neither arm.
            for arm in ("off", "auto") if repeat % 2 == 0 else ("auto", "off"):
                wall, cpu, *rest = timed_run(config, steps, every if arm == "auto" else 0)
                rates[arm].append(wall)
                cpu_rates[arm].append(cpu)
                if arm == "auto":
                    taken, size, direct = rest
                    directs.append(direct)
        pairs = [a / o for a, o in zip(rates["auto"], rates["off"], strict=True)]
        cpu_pairs = [a / o for a, o in zip(cpu_rates["auto"], cpu_rates["off"], strict=True)]
        paired = statistics.median(cpu_pairs)
        print(f"   {name}: {steps} steps, a checkpoint every {every} steps ({taken} taken, {size / 1024:.0f} KiB each)")
        for what, arms, ratios in (("wall", rates, pairs), ("CPU ", cpu_rates, cpu_pairs)):
            print(f"      {what}  off {statistics.median(arms['off']):8.1f} steps/s   auto {statistics.median(arms['auto']):8.1f} steps/s"
                  f"   auto/off {statistics.median(ratios):.3f} (median of {repeats} pairs: {', '.join(f'{r:.3f}' for r in ratios)})")
        print(f"      direct cost of the checkpoint steps: {100 * statistics.median(directs):.2f} % of the training time")
        worst = min(worst, paired)
    return worst


# -- recovery ------------------------------------------------------------------------------

LONG_RUN = {
    "name": "bench-recovery",
    "model": {"type": "mlp", "hidden_sizes": [64, 64]},
    "dataset": {"name": "digits"},
    "training": {"steps": 1_000_000, "batch_size": 32},
    "logging": {"checkpoint_every": 200},
}


def moving_again(client: httpx.Client, experiment_id: str, attempts: int, timeout_s: float = 120) -> float:
    """Seconds until attempt number `attempts` stores progress past the step it resumed from."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        experiment = client.get(f"/api/v1/experiments/{experiment_id}").json()
        runs = experiment.get("attempts") or []
        if len(runs) >= attempts and experiment["status"] == "running":
            resumed = runs[-1]["resumed_from_step"] or 0
            if experiment["progress"]["step"] > resumed:
                return time.monotonic() - started
        time.sleep(0.05)
    raise SystemExit(f"experiment {experiment_id} did not move again within {timeout_s:g} s")


def wait_progress(client: httpx.Client, experiment_id: str, step: int) -> dict:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        experiment = client.get(f"/api/v1/experiments/{experiment_id}").json()
        if experiment["progress"]["step"] >= step:
            return experiment
        time.sleep(0.1)
    raise SystemExit(f"experiment {experiment_id} did not reach step {step}")


@contextlib.contextmanager
def worker(name: str, env: dict[str, str], logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = logs / f"{name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--queues=cpu", "--concurrency=1",
             "--pool=prefork", f"--hostname={name}@%h", "--loglevel=INFO", "--without-mingle", "--without-gossip"],
            env=env, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker {name} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def training_worker(client: httpx.Client, experiment_id: str, names: list[str]) -> str:
    attempt = client.get(f"/api/v1/experiments/{experiment_id}").json()["attempts"][-1]
    return next(name for name in names if attempt["worker"].startswith(name + "@"))


def recovery_pg_redis(logs: Path) -> dict[str, float]:
    flush_redis()
    times = {}
    with scratch_database("checkpoint") as database:
        env = service_env(database, REDIS_URL, GRADWATCH_HEARTBEAT_STALE_S=str(STALE_S), GRADWATCH_REAPER_INTERVAL_S="0.5",
                          GRADWATCH_WORKER_TORCH_THREADS="1", GRADWATCH_FLUSH_EVERY="20")  # fmt: skip
        with api_server(env, logs / "api.log", ready_path="/api/v1/health") as api, httpx.Client(
            base_url=api.url, headers=bench_headers(database), timeout=30
        ) as client:
            names = ["a", "b", "c"]
            with worker("a", env, logs) as a, worker("b", env, logs) as b, worker("c", env, logs) as c:
                processes = dict(zip(names, (a, b, c)))
                experiment_id = client.post("/api/v1/experiments", json=LONG_RUN).json()["id"]
                wait_progress(client, experiment_id, 500)
                victim = training_worker(client, experiment_id, names)
                os.killpg(processes[victim].pid, signal.SIGKILL)
                times["pg+redis SIGKILL"] = moving_again(client, experiment_id, 2)
                wait_progress(client, experiment_id, client.get(f"/api/v1/experiments/{experiment_id}").json()["progress"]["step"] + 300)
                leaving = training_worker(client, experiment_id, names)
                processes[leaving].send_signal(signal.SIGTERM)
                times["pg+redis SIGTERM"] = moving_again(client, experiment_id, 3)
                client.post(f"/api/v1/experiments/{experiment_id}/cancel")
    flush_redis()
    return times


def recovery_embedded(logs: Path) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="gradwatch-bench-up-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADWATCH_")}
    env.update(GRADWATCH_HOME=str(home), GRADWATCH_HEARTBEAT_STALE_S=str(STALE_S), GRADWATCH_REAPER_INTERVAL_S="0.5",
               GRADWATCH_WORKER_TORCH_THREADS="1", GRADWATCH_FLUSH_EVERY="20", GRADWATCH_ALLOW_DOWNLOAD="false",
               PYTHONUNBUFFERED="1")  # fmt: skip
    with (logs / "up.log").open("wb") as handle:
        up = subprocess.Popen([sys.executable, "-m", "service.cli", "up", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/v1/health", up, timeout_s=120)
        token = (home / "token").read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            experiment_id = client.post("/api/v1/experiments", json=LONG_RUN).json()["id"]
            wait_progress(client, experiment_id, 500)
            worker_pid = next(
                int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and _is_worker_of(int(entry.name), up.pid)
            )
            os.kill(worker_pid, signal.SIGKILL)
            seconds = moving_again(client, experiment_id, 2)
            client.post(f"/api/v1/experiments/{experiment_id}/cancel")
    finally:
        stop(up, grace_s=30)
    return {"embedded SIGKILL": seconds}


def _is_worker_of(pid: int, parent: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return int(fields[1]) == parent and b"\0worker\0" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="steps = scale × 10 × probe_overhead's steps")
    parser.add_argument("--no-recovery", action="store_true", help="skip the death-to-moving-again timings")
    args = parser.parse_args()
    header("checkpoint cost: train() with checkpoints at the default interval vs none")
    ratio = cost(args.repeats, args.scale)
    if not args.no_recovery:
        header(f"recovery: a worker's death to the run moving again (stale after {STALE_S:g} s)")
        with tempfile.TemporaryDirectory(prefix="gradwatch-bench-logs-") as folder:
            logs = Path(folder)
            for what, seconds in {**recovery_pg_redis(logs), **recovery_embedded(logs)}.items():
                print(f"   {what:<20} {seconds:6.1f} s")
    print(ratio_line("checkpoints at the default interval vs off (steps per CPU second, worst workload)", ratio, goal=0.98))


if __name__ == "__main__":
    main()
