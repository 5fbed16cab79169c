"""The store: the only code that touches ORM rows; it hands out plain dataclasses.

Every writing function is one transaction and commits it. Functions take a SQLAlchemy
`Session` so the API (a session per request) and the worker's writer thread (a session
of its own) share one implementation.
"""

from service.store.dispatch import DispatchCandidate, mark_dispatched, undelivered_experiments
from service.store.experiments import (
    check_active_limit,
    claim_experiment,
    count_active,
    create_experiment,
    delete_experiment,
    fail_stale_experiments,
    fail_unsent_experiment,
    finish_experiment,
    get_experiment,
    is_cancel_requested,
    list_experiments,
    missing_experiments,
    record_progress,
    request_cancel,
)
from service.store.aggregates import ChunkTable, read_chunk_points, read_chunk_tables
from service.store.idempotency import forget_key
from service.store.catalog import SeriesCatalog, find_series, list_metrics, series_catalog
from service.store.points import read_series, read_timesteps, write_chunks
from service.store.whole_series import read_whole_series
from service.store.records import (
    ActiveLimitExceeded,
    ExperimentNotFound,
    ExperimentRecord,
    SeriesChunk,
    SeriesData,
    TimestepChunk,
    TimestepData,
    TokenRecord,
)
from service.store.resume import (
    AttemptRecord,
    ReapOutcome,
    StoredCheckpoint,
    hand_back,
    list_attempts,
    load_checkpoint,
    reap_stale_experiments,
    save_checkpoint,
)
from service.store.tokens import create_token, find_active_token, list_tokens, revoke_token, touch_token

__all__ = [
    "AttemptRecord",
    "ReapOutcome",
    "StoredCheckpoint",
    "hand_back",
    "list_attempts",
    "load_checkpoint",
    "reap_stale_experiments",
    "save_checkpoint",
    "ActiveLimitExceeded",
    "ChunkTable",
    "DispatchCandidate",
    "ExperimentNotFound",
    "ExperimentRecord",
    "SeriesChunk",
    "SeriesData",
    "TimestepChunk",
    "TimestepData",
    "TokenRecord",
    "check_active_limit",
    "claim_experiment",
    "count_active",
    "create_token",
    "create_experiment",
    "delete_experiment",
    "fail_stale_experiments",
    "find_series",
    "series_catalog",
    "SeriesCatalog",
    "fail_unsent_experiment",
    "find_active_token",
    "finish_experiment",
    "get_experiment",
    "is_cancel_requested",
    "list_experiments",
    "missing_experiments",
    "forget_key",
    "list_metrics",
    "list_tokens",
    "mark_dispatched",
    "read_chunk_points",
    "read_chunk_tables",
    "read_whole_series",
    "read_series",
    "read_timesteps",
    "record_progress",
    "request_cancel",
    "revoke_token",
    "touch_token",
    "undelivered_experiments",
    "write_chunks",
]
