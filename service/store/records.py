"""Plain types that cross the store boundary; ORM rows never leave `service.store`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


class ExperimentNotFound(LookupError):
    """No experiment has this id."""

    def __init__(self, experiment_id: str) -> None:
        super().__init__(f"no experiment with id {experiment_id!r}")
        self.experiment_id = experiment_id


class ActiveLimitExceeded(Exception):
    """Creating `requested` more experiments would take `owner` above their active limit."""

    def __init__(self, owner: str, active: int, requested: int, limit: int) -> None:
        super().__init__(
            f"owner {owner!r} has {active} experiments queued or running; {requested} more "
            f"would make {active + requested}, above the limit of {limit} "
            "(max_active_per_owner; the server's GRADWATCH_LIMIT_MAX_ACTIVE_PER_OWNER raises "
            "it): wait for some to finish, or cancel some"
        )
        self.owner, self.active, self.requested, self.limit = owner, active, requested, limit


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: never its secret, which only its creator ever sees."""

    id: str
    owner: str
    name: str
    scope: str  # read | write | admin
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class ExperimentRecord:
    id: str
    name: str
    tags: list[str]
    status: str  # queued | running | succeeded | failed | diverged | cancelled | timed_out
    spec: dict[str, Any]
    queue: str  # the Celery queue it was sent to: cpu | gpu
    progress_step: int
    progress_total: int | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    dispatched_at: datetime | None  # last handed to the broker; None: never
    worker: str | None
    error: str | None
    result: dict[str, Any] | None
    sweep_id: str | None
    sweep_params: dict[str, Any] | None
    owner: str


@dataclass(frozen=True)
class SeriesChunk:
    """The points one flush measured for one (metric, layer); built by the worker."""

    metric: str
    layer: str | None  # None for global metrics (loss, accuracy, grad_norm_total, …)
    position: int  # index of the layer from input to output; -1 for global metrics
    steps: np.ndarray  # int64 (S,), ascending
    values: np.ndarray  # float64 (S,), NaN/Inf kept as measured


@dataclass(frozen=True)
class TimestepChunk:
    """‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖ for LSTMs) of one recurrent layer over one flush."""

    layer_index: int
    steps: np.ndarray  # int64 (S,)
    timesteps: np.ndarray  # int64 (T',): recorded timestep indices, first and last included
    hidden_grad_norm: np.ndarray  # float64 (S, T')
    cell_grad_norm: np.ndarray | None  # float64 (S, T'), LSTM only


@dataclass(frozen=True)
class SeriesRef:
    """Which stored series holds one (metric, layer)."""

    id: int
    layer: str | None
    position: int


@dataclass(frozen=True)
class SeriesData:
    """One series read back: steps ascending and unique."""

    layer: str | None
    position: int
    steps: np.ndarray  # int64 (N,)
    values: np.ndarray  # float64 (N,)


@dataclass(frozen=True)
class TimestepData:
    """The gradient-through-time matrix of one recurrent layer."""

    layer_index: int
    steps: np.ndarray  # int64 (S,)
    timesteps: np.ndarray  # int64 (T',)
    hidden_grad_norm: np.ndarray  # float64 (S, T')
    cell_grad_norm: np.ndarray | None = field(default=None)  # float64 (S, T') or None
