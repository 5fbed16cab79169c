"""The one settings object of gradwatch, read once from `GRADWATCH_*` variables.

Everything configurable lives here: where data goes, which database and broker to use,
the limits every request is validated against, and the worker's timings. Import
`settings` everywhere (API, workers, CLI, Alembic, tests); never read `os.environ`
elsewhere.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Upper bounds on what one request may ask for; 422 above them.

    The defaults admit real studies: Hochreiter's adding problem goes to T = 1,000,
    pixel-by-pixel MNIST is 784 steps, and long runs reach a million steps.
    """

    model_config = SettingsConfigDict(env_prefix="GRADWATCH_LIMIT_", extra="ignore")

    max_steps: int = 1_000_000
    max_depth: int = 64  # MLP hidden layers, or recurrent layers
    max_width: int = 4096  # units in one layer
    max_seq_len: int = 10_000
    max_batch_size: int = 65_536
    max_dataset_limit: int = 1_000_000
    max_request_bytes: int = 1_000_000
    max_tags: int = 32
    # At most 200: the width of the name columns (a longer name would fail the insert).
    max_name_length: int = Field(200, ge=1, le=200)
    max_sweep_size: int = 256  # experiments one sweep may create
    max_points: int = 1_000_000  # points one series request may return
    # Queued + running experiments one owner may have at once (a sweep counts its
    # members): one person's queue must not hold every worker of a shared lab server.
    max_active_per_owner: int = 512
    # Budgets on a whole spec (service/budgets/), checked before anything is stored.
    # 200M parameters: with Adam and the probes' buffers (9 parameter-sized tensors) 7.2 GB,
    # what still fits max_run_memory_bytes.
    max_parameters: int = 200_000_000
    # The estimated peak memory of one run on its device. 8 GiB: a worker of a 2-core,
    # 24 GiB machine trains one run per core, so two runs take 16 GiB and leave 8 GiB to
    # PostgreSQL, Redis, the API and the page cache.
    max_run_memory_bytes: int = 8 * 2**30
    # Points one run may store (~22 bytes each in PostgreSQL: 100M is about 2.2 GB), and
    # all members of one sweep together (about 22 GB).
    max_points_per_experiment: int = 100_000_000
    max_points_per_sweep: int = 1_000_000_000
    # The longest wall-clock time one run may train (`training.max_runtime_s`, which
    # defaults to it); a run that reaches its own limit ends `timed_out`.
    max_runtime_s: int = 7 * 24 * 3600
    # Experiment ids one `GET /experiments?ids=` may name: a pipeline watching hundreds
    # of runs asks in a few calls, and one query's IN list stays small.
    max_bulk_ids: int = 500
    # Experiments one `GET /compare?ids=` may overlay: each is read whole and diagnosed,
    # and a chart of more curves than this is no longer readable.
    max_compare_ids: int = 20
    # Curvature (`logging.curvature_*`): each power-iteration step and each Hutchinson probe
    # is one Hessian-vector product, about two backward passes over the curvature batch.
    max_curvature_iterations: int = 1_000
    max_curvature_trace_samples: int = 1_000


class DiagnosisThresholds(BaseSettings):
    """Where the summary's verdict draws its lines (env prefix `GRADWATCH_DIAGNOSIS_`).

    Chosen from what the engine measures on the seed's experiments (see
    `service/analysis/diagnosis.py` for the numbers behind each default).
    """

    model_config = SettingsConfigDict(env_prefix="GRADWATCH_DIAGNOSIS_", extra="ignore")

    # Mean |∂L/∂W| of the first weight layer over the last, at the first recorded step
    # (initialisation, where Glorot & Bengio 2010 measure it): below this is vanishing.
    # Sigmoid 784-30-30-10 gives 0.02 (four layers: 0.001); tanh 0.40; ReLU 0.51.
    vanishing_depth_ratio: float = 0.1
    # The same ratio's median over the whole run: below this, vanishing that training never
    # recovered from (the seed's runs all stay above 0.08).
    vanishing_depth_ratio_sustained: float = 0.01
    # ‖∂L/∂s‖ first over last layer must stay below this to confirm vanishing: a small
    # first-layer |∂L/∂W| with a growing back-propagated signal is not vanishing, only small
    # inputs (the N(0, 1) ReLU net: |∂L/∂W| ratio 0.06, ‖∂L/∂s‖ ratio 380).
    vanishing_backprop_ratio: float = 1.0
    # ‖∂L/∂s‖ first over last layer at the first recorded step above this, without
    # clipping, is a gradient exploding with depth (N(0, 1) ReLU: 380; Xavier ReLU: 0.6).
    exploding_depth_ratio: float = 10.0
    # The largest finite pre-clip gradient norm over the early steps' median, without
    # clipping, above this is exploding (the N(0, 1) ReLU run grows ×1e4 in two steps).
    exploding_norm_growth: float = 1000.0
    # The memory horizon (timesteps back over which ‖∂L/∂h_t‖ ≥ horizon_relative_norm ·
    # ‖∂L/∂h_T‖) after training, as a fraction of the sequence, below which the network
    # cannot learn dependencies across its sequence (tanh RNN on adding T=50: 12/49).
    horizon_relative_norm: float = 1e-3
    horizon_min_fraction: float = 0.9
    # The final loss (test, else the late training loss) over the task's trivial baseline
    # (the input-blind predictor: constant MSE, class prior entropy, the copy task's
    # memoryless cross-entropy) at or above this is "not learning": the LSTM on the adding
    # problem with test MSE 0.159 against the constant predictor's 0.167 is at 0.95, one that
    # learned (0.003) at 0.02.
    not_learning_loss_ratio: float = 0.9
    # λ_max after training within this relative distance of the stability limit 2/η
    # (2(1 + β)/η with momentum) is the edge of stability. Cohen et al. 2021 (Fig. 1) see it
    # hover just above 2/η; gradwatch's reference run (tanh MLP 784-64-64-10 on 1,000 MNIST
    # digits, square loss, full-batch SGD η = 0.16) hovers at 1.07-1.16× 2/η after sharpening
    # from 0.85×, so 0.2 takes that in and leaves out a run still sharpening below 0.8×.
    edge_of_stability_tolerance: float = 0.2
    # A σ/tanh/softsign pre-activation is saturated where f'(s) < saturation_derivative · max f'
    # (the engine's `act_saturation` criterion and default, so both agree): σ beyond |s| = 4.36,
    # tanh beyond 2.18, i.e. the unit passes back under 1/20 of the gradient an unsaturated one
    # would. A layer with at least saturation_fraction of its pre-activations there on some
    # histogram step is a `saturation` finding: 784-100-100-10 on 1,000 MNIST test digits with
    # N(0, 1) weights has 0.62 and 0.52 of its two sigmoid layers saturated at step 0 (tanh:
    # 0.80, 0.82), with Xavier weights at most 0.001; a majority of units passing back under
    # 1/20 of the gradient is what Glorot & Bengio 2010 (Fig. 2) show for the top layer.
    saturation_derivative: float = 0.05
    saturation_fraction: float = 0.5
    # Fractions of the recorded steps that count as "early" and as "after training".
    early_fraction: float = 0.1
    late_fraction: float = 0.1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADWATCH_", extra="ignore")

    # Where the embedded default keeps its database, broker folders and datasets.
    home: Path = Field(default_factory=lambda: Path.home() / ".gradwatch")
    # postgresql+psycopg://user@host/db in production; empty means a SQLite file in `home`.
    database_url: str = ""
    # redis://host:6379/0 in production; empty means kombu's filesystem transport in `home`.
    broker_url: str = ""
    # Datasets such as MNIST are read from `<data_dir>/mnist/`; empty means `<home>/data`.
    data_dir: Path | None = None
    # Fetch missing MNIST files from the public mirror (with a timeout and a checksum).
    allow_download: bool = True
    # Where to fetch them from instead (a base URL serving the four .gz files, e.g. a
    # mirror inside a network without internet access); empty means the public mirrors.
    mnist_mirror_url: str = ""
    # Per file, to connect and to read each block: a mirror that stops answering fails the run.
    download_timeout_s: float = 60.0

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # `gradwatch api --workers N` (N > 1): seconds uvicorn's supervisor gives a process to
    # answer its health ping before it kills and replaces it. uvicorn's own 5 s is too short
    # on a busy host, where a process still importing the app misses it, is killed, and the
    # next one too, so that the API never starts (seen under compose on a loaded machine).
    api_worker_healthcheck_s: int = Field(60, ge=1, le=3600)
    # Where the CLI and the client find the API; empty means http://<api_host>:<api_port>.
    api_url: str = ""

    # `required`: every route but /health needs `Authorization: Bearer <token>`. `off`:
    # every caller is an admin named `local_owner`; allowed only while the API binds a
    # loopback address (service/auth/guard.py refuses to start otherwise).
    auth: Literal["required", "off"] = "required"
    # The token the CLI and the client send; empty means the one in `<home>/token`,
    # which `gradwatch up` writes on first start.
    token: str = ""
    # Owner of what is created while `auth` is off.
    local_owner: str = "local"
    # Browser origins allowed to call the API, comma-separated; empty keeps CORS closed
    # (no Access-Control-* header is ever sent).
    cors_origins: str = ""

    # A running experiment whose worker has not written for this long is lost: queued
    # again to resume from its last checkpoint, or failed past max_attempts.
    heartbeat_stale_s: float = 120.0
    # Attempts of one experiment that may lose their worker (killed, out of memory, machine
    # gone) before it ends `failed` instead of resuming; a warm shutdown's hand-back does
    # not count.
    max_attempts: int = Field(3, ge=1, le=100)
    # Keep a run's last checkpoint after it ended (by default it is deleted then).
    keep_checkpoints: bool = False
    # `logging.checkpoint_every: "auto"`: a checkpoint every this many flushes at most
    # (and a few per run at least; README, "Failure handling").
    checkpoint_every_flushes: int = Field(20, ge=1, le=1_000_000)
    # How often the API looks for stale experiments.
    reaper_interval_s: float = 10.0
    # How often a worker's writer reports progress and checks for a cancel request.
    worker_poll_s: float = 0.5
    # Records (logged steps) the engine gathers before handing a batch to the writer.
    flush_every: int = 50
    # Compile the parameter probes' one-pass kernel (torch.compile) in each worker process at
    # its start, in the background; runs use the plain PyTorch path until it is ready. Off,
    # they always do: no compiler needed, and no minutes of CPU per new worker process.
    # Off by default, as the engine's `fused` is (workers/engine/config.py says why).
    worker_compile_probes: bool = False
    # PyTorch intra-op threads per training process; 0 keeps PyTorch's default (one per
    # core). Set it to cores / concurrency when a worker trains several runs at once, or
    # to 1 on a shared machine: oversubscribed threads make small models many times slower.
    worker_torch_threads: int = 0
    # Threads the API answers sync routes and dependencies from (anyio's thread pool,
    # whose default is also 40): each one holds at most one database connection.
    api_threads: int = Field(40, ge=1, le=1000)
    # PostgreSQL connections kept open per process: one per API thread plus a few for the
    # background loops, so that a request never opens one. With 10 kept and 30 overflow,
    # an overflow connection was closed whenever it came back to a full pool, and under 50
    # clients about one request in five opened a new one (a PostgreSQL backend started,
    # authenticated and pinged: tens to hundreds of ms on a loaded machine): the status
    # polls' rare stalls. Overflow is only for bursts beyond that.
    db_pool_size: int = 44
    db_max_overflow: int = 10
    # Rendered summaries each API process keeps until their experiment's data changes
    # (service/api/summary_cache.py), in bytes of JSON; 0 turns the cache off. A
    # 1,000,000-point run's summary is 18 kB at the default max_points (500) and 135 kB at
    # 5,000, so 64 MiB holds some thousands of runs' summaries.
    summary_cache_bytes: int = Field(64 * 2**20, ge=0)
    # While the database is unreachable the API answers 503 with this Retry-After (seconds).
    db_unavailable_retry_after_s: int = Field(5, ge=1, le=3600)
    # Redis redelivers an unacknowledged task after this long: longer than any run.
    visibility_timeout_s: int = 7 * 24 * 3600
    # Address space a training process may add during one run (RLIMIT_AS soft limit: its
    # size when the run starts plus this), so that a run the estimate got wrong fails with
    # "out of memory" instead of waking the kernel's OOM killer. None: twice
    # limits.max_run_memory_bytes (address space runs ahead of resident memory: glibc's
    # per-thread arenas, thread stacks, torch's mappings); 0: no cap. Never applied to
    # CUDA runs (the driver maps far more address space than it uses).
    worker_memory_cap_bytes: int | None = None

    # Nothing stranded (README, "Failure handling"). The API's dispatch reconciler sends
    # a queued experiment's task again when its message is not waiting in the broker
    # `redispatch_after_s` after it was last handed over (or, never handed over, after its
    # commit): an experiment whose message was lost is back in the broker within
    # redispatch_after_s + dispatch_interval_s, and trains as soon as a worker is free.
    redispatch_after_s: float = 60.0
    # How often the reconciler looks (0 turns it off).
    dispatch_interval_s: float = 10.0
    # Test only: the API kills itself (SIGKILL) after committing a new experiment and
    # before handing its task to the broker, to show that such a row still runs.
    fault_kill_before_enqueue: bool = False
    # A worker keeps training through a database outage this long, keeping what it could
    # not write (at most writer_max_buffer_bytes; beyond, training pauses); past it the
    # run stops and ends `failed` with "database unreachable for N s", written (with
    # what was measured) once the database is back.
    db_outage_tolerance_s: float = 600.0
    # Longest wait between two attempts to reach the database (the delay doubles from
    # 0.2 s up to this): how soon after an outage the writes resume.
    db_retry_max_backoff_s: float = 5.0
    # Measurements one run's writer may hold while the database does not take them.
    writer_max_buffer_bytes: int = 256 * 2**20

    # `gradwatch up` restarts a child that died after supervisor_backoff_s, doubling up to
    # 30 s, and gives up (stopping everything, exit status 1) when one child died more
    # than supervisor_max_restarts times within supervisor_restart_window_s.
    supervisor_backoff_s: float = 1.0
    supervisor_max_restarts: int = 5
    supervisor_restart_window_s: float = 120.0

    # How long an `Idempotency-Key` is remembered: a retry within this time returns what
    # the first request created; after it, the same key creates anew (Stripe keeps 24 h).
    idempotency_ttl_s: float = 24 * 3600.0
    # Hosts a callback (`notify.url`) may point at, comma-separated: an exact host name or
    # IP, or `.example.org` for that domain's subdomains. Loopback only by default, so the
    # service cannot be made to send requests into a network it sits in.
    callback_allowed_hosts: str = "127.0.0.1,localhost,::1"
    # How often the API looks for ended runs to announce and deliveries that are due;
    # 0 turns callbacks off in this process (the events wait in the database).
    callback_poll_s: float = 1.0
    # A failed delivery is tried again after callback_retry_initial_s, doubling each time
    # up to callback_retry_max_interval_s (with jitter), until callback_retry_for_s after
    # the run ended; then it is marked failed.
    callback_retry_initial_s: float = 2.0
    callback_retry_max_interval_s: float = 600.0
    callback_retry_for_s: float = 24 * 3600.0
    # One delivery's connect + read timeout; a receiver should answer at once and work later.
    callback_timeout_s: float = 10.0

    # The dashboard's live view (GET /experiments/{id}/events): how often the process's
    # one poller (service/api/live_feed.py) looks at every watched experiment for a
    # change (points reach the page within this plus the writer's flush), the
    # keep-alive comment interval, and the most a stream stays open before it ends and
    # the browser reconnects with Last-Event-ID (so proxies and old streams never pile up).
    events_poll_s: float = Field(0.25, gt=0, le=10)
    events_keepalive_s: float = Field(15.0, gt=0)
    events_max_stream_s: float = Field(600.0, gt=0)
    # Points per series in one event at most (more are thinned, extremes kept).
    events_max_points: int = Field(1000, ge=2)
    # The dashboard's session cookie lives this long in the browser (its token lives until
    # logout or `gradwatch token revoke`); `Secure` is set when the request came over https.
    session_max_age_s: int = Field(7 * 24 * 3600, ge=60)

    # Seconds the CLI's client spends retrying an unreachable or 502/503/504-answering API
    # per call before it gives up (GradwatchClient's `retry_for`).
    client_retry_for_s: float = 60.0

    limits: Limits = Field(default_factory=Limits)
    diagnosis: DiagnosisThresholds = Field(default_factory=DiagnosisThresholds)

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'gradwatch.db'}"

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / "data"

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @cached_property
    def token_file(self) -> Path:
        return self.home / "token"

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def callback_host_list(self) -> list[str]:
        return [host.strip().lower() for host in self.callback_allowed_hosts.split(",") if host.strip()]

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def resolved_worker_memory_cap_bytes(self) -> int:
        if self.worker_memory_cap_bytes is None:
            return 2 * self.limits.max_run_memory_bytes
        return self.worker_memory_cap_bytes

    @cached_property
    def broker_folder(self) -> Path:
        return self.home / "broker"


settings = Settings()
