"""Every benchmark in sequence, then their ratio lines together: `make bench`.

    python -m bench.run_all [--only NAME ...] [--quick]

Runs each module of `bench/` that exists as its own process (`python -m bench.<name>`),
so one benchmark's threads, connections and imports never colour the next one's figures;
prints everything each one prints, then every `RATIO` line again at the end. `--quick`
passes small sizes to each, to check that they run and print their RATIO line (its
figures are not the README's; CI runs it). A benchmark that fails, or ends without a
RATIO line, is reported and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# In the order the README presents them; the engine issue's probe overhead and the
# analysis issue's series queries belong to other modules and run when present.
BENCHMARKS = ["training_loop", "probe_overhead", "curvature_cost", "ingest", "queries", "series_query", "load", "scale_out", "downsample", "checkpoint", "dashboard"]
QUICK = {  # a few seconds of measuring each (CI runs them all in about two minutes)
    "training_loop": ["--steps", "150", "--repeats", "1"],
    "probe_overhead": ["--repeats", "1", "--scale", "0.05", "--threads", "1"],
    "curvature_cost": ["--repeats", "1", "--scale", "0.02", "--threads", "1"],
    "ingest": ["--steps", "1000"],
    "queries": ["--steps", "500", "--rounds", "1", "--per-round", "1"],
    "series_query": ["--steps", "2000", "--layers", "2", "--requests", "10"],
    "load": ["--duration", "2", "--clients", "5", "--experiments", "2", "--steps", "500", "--floor-duration", "2"],
    "scale_out": ["--steps", "100", "--runs", "2"],
    "downsample": ["--repeats", "1"],
    "checkpoint": ["--repeats", "1", "--scale", "0.05", "--no-recovery"],
    "dashboard": ["--steps", "2000", "--layers", "3", "--watchers", "3", "--duration", "2", "--repeats", "1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that everything runs")
    args = parser.parse_args()
    ratios: list[str] = []
    failed: list[str] = []
    for name in args.only or BENCHMARKS:
        if not (BENCH / f"{name}.py").exists():
            print(f"== {name}: not present, skipped\n", flush=True)
            continue
        command = [sys.executable, "-m", f"bench.{name}", *(QUICK.get(name, []) if args.quick else [])]
        found = len(ratios)
        print(f"$ {' '.join(['python', *command[1:]])}", flush=True)
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=BENCH.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("RATIO "):
                ratios.append(line.rstrip())
        status = process.wait()
        print(f"   ({name}: {time.perf_counter() - started:.0f} s, exit status {status})\n", flush=True)
        if status != 0:
            failed.append(name)
        elif len(ratios) == found:
            print(f"   ({name} printed no RATIO line)\n", flush=True)
            failed.append(name)
    print("== ratios")
    for line in ratios:
        print(line)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
