"""What one sharpness measurement costs, in units of one training step.

    .venv/bin/python -m bench.curvature_cost [--repeats 3] [--threads 1] [--every 10]

The probe benchmark's two workloads (bench/probe_overhead.py) are trained by `train()` with
the API's default probes, without curvature and with `curvature.every` = --every (20 power
iterations on 1,000 examples, the spec's defaults; then the same plus 10 Hutchinson probes),
interleaved and repeated. With r₀ and r the steps/s without and with curvature, one
measurement costs every · (r₀ / r − 1) training steps. Each power iteration is one
Hessian-vector product (a double backward) over the curvature batch, so the cost grows with
iterations × curvature batch / training batch.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.common import ratio_line
from bench.probe_overhead import engine, workloads
from workers.engine import ProbeConfig
from workers.engine.config import CurvatureConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of timed steps")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats, curvature every {args.every} steps")
    probes = ProbeConfig(timesteps_every=10, max_timesteps=100)
    for name, (config, steps) in workloads(args.device).items():
        steps = max(int(steps * args.scale), 30)
        arms = {
            "without": CurvatureConfig(),
            "λ_max (20 iterations, 1000 examples)": CurvatureConfig(every=args.every),
            "λ_max + tr(H) (10 probes)": CurvatureConfig(every=args.every, trace_samples=10),
        }
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(args.repeats):  # interleaved, so that drifts in machine load hit every arm
            for arm, curvature in arms.items():
                config.curvature = curvature
                rates[arm].append(engine(config, steps, probes).rate)
        config.curvature = CurvatureConfig()
        base = statistics.median(rates["without"])
        print(f"\n{name} ({steps} steps per run, training batch {config.training.batch_size})")
        for arm in arms:
            rate = statistics.median(rates[arm])
            cost = args.every * (base / rate - 1.0)
            extra = "" if arm == "without" else f"  one measurement ≈ {cost:.1f} training steps"
            print(f"  {arm:38s} {rate:8.1f} steps/s (runs {min(rates[arm]):.0f}–{max(rates[arm]):.0f}){extra}")
        # The cost of one λ_max measurement, in training steps of this workload (no goal: it
        # says how sparse `logging.curvature_every` should be).
        measured = statistics.median(rates["λ_max (20 iterations, 1000 examples)"])
        print(ratio_line(f"curvature_cost {name.split(' ')[0]} one λ_max measurement / one training step",
                         args.every * (base / measured - 1.0)))


if __name__ == "__main__":
    main()
