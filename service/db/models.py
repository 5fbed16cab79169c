"""Tables of gradwatch, as SQLAlchemy 2.0 `Mapped[]` models.

Only `service.store` imports these; rows never leave it. The schema exists in a database
only through Alembic (`migrations/`); only tests call `create_all`.

Points are stored in chunks (docs/architecture.md): one `point_chunks` row per series and
flush, holding that flush's steps (int64) and values (float64) as little-endian bytes.
A series query reads only its own chunks through the primary key
`(series_id, first_step)`, which is also what makes a retried batch a no-op
(INSERT … ON CONFLICT DO NOTHING). Each chunk also keeps its few representative points,
so that a series thinned to `max_points` (minmax) reads a few bytes per chunk rather than
all of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db.base import Base, UTCDateTime

EXPERIMENT_STATUSES = ("queued", "running", "succeeded", "failed", "diverged", "cancelled", "timed_out")
# `timed_out`: stopped by its training.max_runtime_s (migration 0003), points kept.
FINISHED_STATUSES = ("succeeded", "failed", "diverged", "cancelled", "timed_out")
TOKEN_SCOPES = ("read", "write", "admin")
# How a worker's attempt at an experiment ended: the run ended there (`finished`), the
# worker died or went silent (`lost`), or it shut down and gave the run back (`handed_back`).
ATTEMPT_ENDINGS = ("finished", "lost", "handed_back")
# The owner of rows stored before ownership existed (migration 0002) and of rows a
# caller outside the API creates without naming one (tests, scripts using the store).
LEGACY_OWNER = "legacy"


class Sweep(Base):
    """A grid of experiments built from one base spec (filled by the analysis routes)."""

    __tablename__ = "sweeps"
    __table_args__ = (sa.Index("ix_sweeps_owner", "owner"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    owner: Mapped[str] = mapped_column(sa.String(100), server_default=LEGACY_OWNER)
    base_spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    grid: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReproductionRun(Base):
    """One run of a catalogued study (service/reproductions/): the sweep its protocol became."""

    __tablename__ = "reproduction_runs"
    __table_args__ = (sa.Index("ix_reproduction_runs_owner", "owner"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    study: Mapped[str] = mapped_column(sa.String(100))
    owner: Mapped[str] = mapped_column(sa.String(100))
    sweep_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("sweeps.id", ondelete="CASCADE"))
    # Spec changes applied to every member after the grid ({} for the protocol as catalogued):
    # a variant that tests whether the claim survives them.
    overrides: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'diverged', 'cancelled', 'timed_out')",
            name="status",
        ),
        # The list endpoint pages newest first, optionally within one status.
        sa.Index("ix_experiments_created_at", "created_at"),
        sa.Index("ix_experiments_status_created_at", "status", "created_at"),
        sa.Index("ix_experiments_name", "name"),
        sa.Index("ix_experiments_sweep_id", "sweep_id"),
        # An owner's list pages newest first; the active-run limit counts by status.
        sa.Index("ix_experiments_owner_created_at", "owner", "created_at"),
        sa.Index("ix_experiments_owner_status", "owner", "status"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    owner: Mapped[str] = mapped_column(sa.String(100), server_default=LEGACY_OWNER)
    status: Mapped[str] = mapped_column(sa.String(16))
    # The validated, fully defaulted ExperimentSpec as JSON.
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    queue: Mapped[str] = mapped_column(sa.String(32))
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    progress_step: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    progress_total: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Written by every batch the worker stores; the reaper fails runs where it goes stale.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the task was last handed to the broker; NULL: committed but never handed over.
    # The dispatch reconciler (service/dispatch.py) re-sends queued rows from it.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker: Mapped[str | None] = mapped_column(sa.String(200))
    error: Mapped[str | None] = mapped_column(sa.Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    sweep_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("sweeps.id", ondelete="SET NULL")
    )
    sweep_params: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)

    tag_rows: Mapped[list[ExperimentTag]] = relationship(
        order_by="ExperimentTag.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )


class ExperimentTag(Base):
    """One tag of one experiment: a table rather than a JSON list so `?tag=` uses an index."""

    __tablename__ = "experiment_tags"
    __table_args__ = (sa.Index("ix_experiment_tags_tag", "tag"),)

    experiment_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    position: Mapped[int] = mapped_column(sa.Integer)


class Series(Base):
    """One (metric, layer) time series of an experiment; its points live in `point_chunks`."""

    __tablename__ = "series"
    __table_args__ = (sa.UniqueConstraint("experiment_id", "metric", "layer"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("experiments.id", ondelete="CASCADE")
    )
    metric: Mapped[str] = mapped_column(sa.String(64))
    # '' for global metrics (a NULL would defeat the unique constraint); the store maps it to None.
    layer: Mapped[str] = mapped_column(sa.String(200))
    # Index of the layer from input to output; -1 for global metrics.
    position: Mapped[int] = mapped_column(sa.Integer)


class PointChunk(Base):
    """The points one flush wrote for one series: little-endian int64 steps, float64 values."""

    __tablename__ = "point_chunks"
    __table_args__ = (
        # Covering index for thinned reads (service/store/summaries.py): a series' entries
        # are contiguous here, while its rows are spread over the table one per page (each
        # flush writes every series side by side), so an index-only scan reads ~60 times
        # fewer pages. The name the convention would give is beyond PostgreSQL's 63 bytes.
        sa.Index(
            "ix_point_chunks_summary",
            "series_id",
            "first_step",
            "last_step",
            "summary_steps",
            "summary_values",
            "aggregates",
        ),
    )

    series_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    first_step: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    # Lets a step-range query skip chunks without decoding them.
    last_step: Mapped[int] = mapped_column(sa.BigInteger)
    n_points: Mapped[int] = mapped_column(sa.Integer)
    steps: Mapped[bytes] = mapped_column(sa.LargeBinary)
    values: Mapped[bytes] = mapped_column(sa.LargeBinary)
    # The chunk's representative points (service/store/summaries.py): its first, last,
    # minimum and maximum, and its first NaN/±Inf with its finite extremes, in the same
    # encoding as `steps` and `values` (4 points for a finite chunk, at most 9). A
    # minmax-thinned query reads these small columns instead of every point.
    summary_steps: Mapped[bytes] = mapped_column(sa.LargeBinary)
    summary_values: Mapped[bytes] = mapped_column(sa.LargeBinary)
    # The chunk's aggregates (service/store/aggregates.py): first and last step, point
    # count, step spacing and the sum of its values, from which bucket means are read
    # without decoding the chunk. NULL only for a chunk written before revision 0008 and
    # not yet backfilled; such a series is read in full.
    aggregates: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)


class TimestepChunk(Base):
    """Gradient norms through time for one recurrent layer and one flush.

    `hidden_grad_norm` and `cell_grad_norm` are (n_steps, n_timesteps) float64 matrices,
    row-major, little-endian; `cell_grad_norm` is NULL except for LSTMs.
    """

    __tablename__ = "timestep_chunks"

    experiment_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    layer_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    first_step: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    last_step: Mapped[int] = mapped_column(sa.BigInteger)
    n_steps: Mapped[int] = mapped_column(sa.Integer)
    n_timesteps: Mapped[int] = mapped_column(sa.Integer)
    steps: Mapped[bytes] = mapped_column(sa.LargeBinary)
    timesteps: Mapped[bytes] = mapped_column(sa.LargeBinary)
    hidden_grad_norm: Mapped[bytes] = mapped_column(sa.LargeBinary)
    cell_grad_norm: Mapped[bytes | None] = mapped_column(sa.LargeBinary)


class HistogramChunk(Base):
    """The histograms one flush measured for one (metric, layer) (service/store/histograms.py).

    `steps` is little-endian int64 (n_steps,); `counts` the zlib-compressed little-endian
    int64 (n_steps, bins + 4) matrix, row-major (mostly zeros: it compresses ~10×); the bin
    edges are `bins` + 1 evenly spaced values from `first_edge` to `last_edge`.
    """

    __tablename__ = "histogram_chunks"

    experiment_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    layer: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    first_step: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    last_step: Mapped[int] = mapped_column(sa.BigInteger)
    position: Mapped[int] = mapped_column(sa.Integer)  # the row's place in the engine's order
    n_steps: Mapped[int] = mapped_column(sa.Integer)
    bins: Mapped[int] = mapped_column(sa.Integer)
    first_edge: Mapped[float] = mapped_column(sa.Float)
    last_edge: Mapped[float] = mapped_column(sa.Float)
    steps: Mapped[bytes] = mapped_column(sa.LargeBinary)
    counts: Mapped[bytes] = mapped_column(sa.LargeBinary)


class ApiToken(Base):
    """An API token: only the SHA-256 of its secret is stored (service/auth/tokens.py)."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        sa.CheckConstraint("scope IN ('read', 'write', 'admin')", name="scope"),
        # Every authenticated request looks its token up by hash: one unique-index probe.
        sa.Index("ix_api_tokens_token_hash", "token_hash", unique=True),
        sa.Index("ix_api_tokens_owner", "owner"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64))  # hex SHA-256 of the secret
    owner: Mapped[str] = mapped_column(sa.String(100))
    name: Mapped[str] = mapped_column(sa.String(200))
    scope: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Written at most once a minute per token (service/store/tokens.py), not per request.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Revoked tokens are kept (who had access, until when) but never authenticate.
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyKey(Base):
    """An `Idempotency-Key` an owner sent with a create, and what that request created.

    The primary key `(owner, key)` is what makes one key create one resource: of two
    requests racing with the same key, the second's INSERT fails on it and rolls back
    the experiment or sweep it would have created (service/idempotency/).
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('experiment', 'sweep')", name="kind"),
        # Expired keys are purged, and a late retry's key is found expired, by this.
        sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    owner: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # experiment | sweep: the route it was used on
    # Hex SHA-256 of the request's canonical JSON: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    resource_id: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


CALLBACK_STATES = ("waiting", "pending", "delivered", "failed", "skipped")


class Callback(Base):
    """A promise to POST an event to `url` once an experiment, or every member of a
    sweep, has ended (service/callbacks/).

    Written in the transaction that creates the experiment or sweep, so it exists before
    any worker can end the run. `waiting` until then; the API's delivery loop then fixes
    the event body and moves it to `pending` (or `skipped` when the end status is not in
    `events`), and sends it until it is `delivered` or, after the retry window, `failed`.
    """

    __tablename__ = "callbacks"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('waiting', 'pending', 'delivered', 'failed', 'skipped')", name="state"
        ),
        sa.CheckConstraint("(experiment_id IS NULL) <> (sweep_id IS NULL)", name="one_target"),
        # The delivery loop's two questions: which are waiting, which pending ones are due.
        sa.Index("ix_callbacks_state_next_attempt_at", "state", "next_attempt_at"),
        sa.Index("ix_callbacks_experiment_id", "experiment_id"),
        sa.Index("ix_callbacks_sweep_id", "sweep_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(100))  # whose secret signs it
    experiment_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("experiments.id", ondelete="CASCADE")
    )
    sweep_id: Mapped[str | None] = mapped_column(sa.String(32), sa.ForeignKey("sweeps.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(sa.String(2048))
    events: Mapped[list[str]] = mapped_column(sa.JSON)  # end statuses that are announced
    state: Mapped[str] = mapped_column(sa.String(16))
    event: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)  # the body, fixed when the run ended
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    triggered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Due time of the next attempt; while one is in flight, the end of its lease.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)


class CallbackAttempt(Base):
    """One try at delivering a callback: what the receiver answered, or why it did not."""

    __tablename__ = "callback_attempts"

    callback_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("callbacks.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float] = mapped_column(sa.Float)
    status_code: Mapped[int | None] = mapped_column(sa.Integer)  # None: no HTTP answer
    error: Mapped[str | None] = mapped_column(sa.Text)


class CallbackSecret(Base):
    """The key an owner's callbacks are signed with (HMAC-SHA256). Kept in the clear:
    signing needs it, and its owner reads it back to verify (unlike API tokens)."""

    __tablename__ = "callback_secrets"

    owner: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    secret: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Checkpoint(Base):
    """The latest checkpoint of a run (workers/engine/checkpoint.py), kept in the database so
    that every worker of a deployment can resume it without a shared volume. One row per
    experiment, replaced by each newer one; deleted with the experiment and cleared when
    the run ends (unless GRADWATCH_KEEP_CHECKPOINTS)."""

    __tablename__ = "checkpoints"

    experiment_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(sa.BigInteger)  # steps done when it was taken
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Attempt(Base):
    """One claim of an experiment by a worker: who, when, until when, and why it ended."""

    __tablename__ = "attempts"

    experiment_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(sa.Integer, primary_key=True)  # 1, 2, …
    worker: Mapped[str] = mapped_column(sa.String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resumed_from_step: Mapped[int | None] = mapped_column(sa.BigInteger)  # None: from the start
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How it ended (ATTEMPT_ENDINGS), None while it runs; only `lost` ones count against
    # GRADWATCH_MAX_ATTEMPTS, so a scale-down never uses up a run's retries.
    ending: Mapped[str | None] = mapped_column(sa.String(16))
    why: Mapped[str | None] = mapped_column(sa.Text)
