"""The diagnosis of an experiment, kept as the response it rendered, until its data changes.

A summary reads every value of its series (medians, percentiles and step-by-step ratios
cannot be had from chunk aggregates: docs/architecture.md), tens of milliseconds for a
million points. Its inputs are the experiment's row (status, name, spec, result), its
stored chunks and the process's thresholds; chunks are only ever added, so their counts
(service/store/data_version.py) identify them exactly. A hit therefore costs one query of
four counts and is the same bytes a fresh computation renders, never an approximation.

In process, not in a table: a hit needs no read of a stored body, the route is the only
writer, and there is no migration or cleanup; each API process fills its own (a few
misses after a restart or per `--workers` process), bounded by `GRADWATCH_SUMMARY_CACHE_BYTES`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from service.store.data_version import DataVersion
from service.store.records import ExperimentRecord


@dataclass(frozen=True)
class SummaryInputs:
    """Everything a summary is a function of, besides the app's thresholds (fixed per process)."""

    status: str
    name: str
    # The row's JSON as read (a fresh dict per read, never mutated by the diagnosis):
    # compared whole, not trusted to a hash.
    spec: dict[str, Any]
    result: dict[str, Any] | None
    data: DataVersion

    @classmethod
    def of(cls, record: ExperimentRecord, data: DataVersion) -> SummaryInputs:
        return cls(record.status, record.name, record.spec, record.result, data)


class SummaryCache:
    """(experiment id, max_points) → the rendered summary and the inputs it was computed
    from; least recently used entries go first once the bodies exceed `max_bytes` (0:
    nothing is kept). Thread-safe: sync routes run in the thread pool."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int], tuple[SummaryInputs, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, experiment_id: str, max_points: int, inputs: SummaryInputs) -> bytes | None:
        """The body computed from exactly `inputs`, or None (an entry from older inputs is dropped)."""
        key = (experiment_id, max_points)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] != inputs:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, experiment_id: str, max_points: int, inputs: SummaryInputs, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return  # would evict everything else and still not fit
        key = (experiment_id, max_points)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (inputs, body)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, int]) -> None:
        _, body = self._entries.pop(key)
        self._bytes -= len(body)
