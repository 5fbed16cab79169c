"""The API's cost of live watchers without their browsers: N event streams, on PostgreSQL.

    python -m bench.live_streams [--watchers 20] [--duration 20]

The dashboard benchmark (bench/dashboard.py) opens real Chromium pages, whose redraws on a
2-core machine saturate both cores by themselves; this one keeps only what a watcher costs
the API: one `GET /api/v1/experiments/{id}/events` stream per running experiment (read by a
thread of this process, every `points` event counted), while a writer appends a flush to each
experiment every 0.5 s through the store, as workers would. The API's p99 for other requests
(an experiment, a thinned 10-layer series, the list; one client in a loop for `--duration` s)
is taken with nobody watching, with the streams open, and with nobody watching again.
RATIO = p99 with the streams / p99 of both windows without (the dashboard's goal: ≤ 1.20).

Needs PostgreSQL (GRADWATCH_BENCH_POSTGRES_URL).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import httpx

from bench.common import api_server, bench_headers, latency, machine, scratch_database, service_env
from bench.dashboard import LiveWriter, api_load, fill_finished


class StreamReader(threading.Thread):
    """Reads one experiment's event stream until told to stop; counts its `points` events."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.points = 0
        self.first_points_s: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        with httpx.stream("GET", self.url, headers=self.headers, timeout=None) as response:
            for line in response.iter_lines():
                if line.startswith("event: points"):
                    self.points += 1
                    if self.first_points_s is None:
                        self.first_points_s = time.monotonic() - started
                if self.stop.is_set():
                    return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    print(f"live streams: {machine()}; load average {os.getloadavg()[0]:.1f}")
    with scratch_database("streams") as url:
        finished = fill_finished(url, 20_000, 10)
        headers = bench_headers(url)
        env = service_env(url, GRADWATCH_REAPER_INTERVAL_S="0", GRADWATCH_DISPATCH_INTERVAL_S="0", GRADWATCH_CALLBACK_POLL_S="0")
        with api_server(env) as server:
            writer = LiveWriter(url, args.watchers, 10)
            writer.start()
            try:
                before = api_load(server.url, headers, finished, args.duration)
                print(f"API, nobody watching:       {latency(before)}  p99 {latency(before).p99_ms:7.1f} ms")
                readers = [StreamReader(f"{server.url}/api/v1/experiments/{i}/events", headers) for i in writer.ids]
                for reader in readers:
                    reader.start()
                busy = latency(api_load(server.url, headers, finished, args.duration))
                for reader in readers:
                    reader.stop.set()
                print(f"API, {args.watchers} streams open:     {busy}  p99 {busy.p99_ms:7.1f} ms")
                firsts = [r.first_points_s for r in readers if r.first_points_s is not None]
                print(f"  points events per stream: {min(r.points for r in readers)}–{max(r.points for r in readers)};"
                      f" {len(firsts)} of {len(readers)} streams got points, the first after at most"
                      f" {max(firsts, default=float('nan')):.2f} s")  # fmt: skip
                after = api_load(server.url, headers, finished, args.duration)
                print(f"API, nobody watching again: {latency(after)}  p99 {latency(after).p99_ms:7.1f} ms")
            finally:
                writer.close()
    quiet = latency(before + after)
    ratio = busy.p99_ms / quiet.p99_ms
    verdict = "MET" if ratio <= 1.2 else "MISSED"
    print(f"RATIO api_p99_with_{args.watchers}_streams_vs_none = {ratio:.2f}x (goal <= 1.20x: {verdict})")


if __name__ == "__main__":
    main()
