"""Thinning a long series for a plot: `service.analysis.downsample` against a Python loop.

    python -m bench.downsample [--points 100000] [--max-points 1000] [--repeats 5]

Both arms thin the same 100,000-point random walk (with a NaN every 997 points, which
forces the vectorised minmax path) to 1,000 points:

- **loop**: M4 (Jugel et al. 2014) written as a plain Python loop over the buckets,
  first/last/min/max of each: what the vectorised code replaces;
- **gradwatch**: `downsample(steps, values, max_points, agg)` for each aggregation.

Arms run interleaved, `--repeats` times each; the ratio is of medians (loop time over
gradwatch's minmax time). This used to be a timed assertion in the test suite; timings on a
shared machine belong here, as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.common import header, ratio_line
from service.analysis.downsample import AGGREGATIONS, downsample


def python_m4(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[list[int], list[float]]:
    """First, last, min and max of each of max_points/4 buckets, one Python step per point."""
    buckets = max(1, max_points // 4)
    size = -(-len(steps) // buckets)
    out_steps: list[int] = []
    out_values: list[float] = []
    for start in range(0, len(steps), size):
        chosen = {start, min(start + size, len(steps)) - 1}
        low = high = None
        for index in range(start, min(start + size, len(steps))):
            value = values[index]
            if value != value:  # NaN: keep it visible
                chosen.add(index)
                continue
            if low is None or value < values[low]:
                low = index
            if high is None or value > values[high]:
                high = index
        chosen.update(i for i in (low, high) if i is not None)
        for index in sorted(chosen):
            out_steps.append(int(steps[index]))
            out_values.append(float(values[index]))
    return out_steps, out_values


def timed(function, *args) -> float:  # noqa: ANN001
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--max-points", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    header(f"downsample: {args.points:,} points to {args.max_points:,}")
    rng = np.random.default_rng(0)
    steps = np.arange(args.points, dtype=np.int64)
    values = np.cumsum(rng.standard_normal(args.points))
    values[::997] = np.nan
    reducing = [agg for agg in AGGREGATIONS if agg != "none"]
    times: dict[str, list[float]] = {name: [] for name in ["loop", *reducing]}
    for agg in reducing:  # warm-up: first-call imports and caches are not the thing measured
        downsample(steps, values, args.max_points, agg)
    for _ in range(args.repeats):
        times["loop"].append(timed(python_m4, steps, values, args.max_points))
        for agg in reducing:
            times[agg].append(timed(downsample, steps, values, args.max_points, agg))
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    for name, median in medians.items():
        print(f"   {name:<8} median {1000 * median:8.2f} ms over {args.repeats}")
    print(ratio_line("downsample_minmax_vs_python_loop", medians["loop"] / medians["minmax"], goal=10))


if __name__ == "__main__":
    main()
