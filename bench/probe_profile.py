"""Where a probed training step's time goes: torch.profiler over the engine's loop.

    .venv/bin/python -m bench.probe_profile [--workload lstm|mlp] [--probes all|params|layers|none] [--steps 40]

Runs `train()` on one of bench/probe_overhead.py's workloads with the chosen probes on every
step, under torch.profiler (CPU activities, and CUDA where the device is one), and prints the
operators by self time, with the count of calls per training step: the count is the number of
kernel dispatches, each of which costs a few µs on a CPU however small its tensors. The
row statistics compile first (as a worker warms them) unless `--plain`.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.probe_overhead import WARMUP, warm_row_statistics, workloads
from workers.engine import ProbeConfig, train
from workers.engine.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["lstm", "mlp"], default="lstm")
    parser.add_argument("--probes", choices=["all", "params", "layers", "none"], default="all")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--plain", action="store_true", help="the plain-PyTorch row statistics")
    parser.add_argument("--rows", type=int, default=25, help="operators to print")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if not args.plain:
        warm_row_statistics(device)
    config, _ = next(value for key, value in workloads(args.device).items() if key.startswith(args.workload))
    config.training.steps = args.steps + WARMUP
    config.probes = {
        "all": ProbeConfig(fused=not args.plain),
        "params": ProbeConfig(layers=False, timesteps=False, fused=not args.plain),
        "layers": ProbeConfig(parameters=False, timesteps=False),
        "none": ProbeConfig(parameters=False, layers=False, timesteps=False),
    }[args.probes]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    # The profiler is on for the steps after the warm-up only: should_stop runs before every step.
    state = {"step": 0, "profiler": profile(activities=activities), "started": 0.0}

    def should_stop() -> bool:
        if state["step"] == WARMUP:
            state["profiler"].__enter__()
            state["started"] = time.perf_counter()
        state["step"] += 1
        return False

    train(config, lambda batch: None, should_stop)
    elapsed = time.perf_counter() - state["started"]  # includes the final evaluation: see the table
    state["profiler"].__exit__(None, None, None)
    averages = state["profiler"].key_averages()
    steps = args.steps
    print(f"{args.workload}, probes {args.probes}, {steps} profiled steps, {elapsed / steps * 1e3:.2f} ms/step (wall, profiled)")
    print(f"{'operator':44s} {'self ms/step':>12s} {'calls/step':>10s}")
    rows = sorted(averages, key=lambda event: event.self_cpu_time_total, reverse=True)[: args.rows]
    for event in rows:
        print(f"{event.key[:44]:44s} {event.self_cpu_time_total / 1e3 / steps:12.3f} {event.count / steps:10.1f}")
    total_calls = sum(event.count for event in averages if event.key.startswith("aten::"))
    print(f"aten calls per step: {total_calls / steps:.0f}")


if __name__ == "__main__":
    main()
