"""The one settings object of gradwatch, read once from `GRADWATCH_*` variables.

Everything configurable lives here: where data goes, which database and broker to use,
the limits every request is validated against, and the worker's timings. Import
`settings` everywhere (API, workers, CLI, Alembic, tests); never read `os.environ`
elsewhere.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

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
    max_name_length: int = 200
    max_sweep_size: int = 256  # experiments one sweep may create
    max_points: int = 1_000_000  # points one series request may return


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

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    # A running experiment whose worker has not written for this long is marked failed.
    heartbeat_stale_s: float = 120.0
    # How often the API looks for stale experiments.
    reaper_interval_s: float = 10.0
    # How often a worker's writer reports progress and checks for a cancel request.
    worker_poll_s: float = 0.5
    # Records (logged steps) the engine gathers before handing a batch to the writer.
    flush_every: int = 50
    # Redis redelivers an unacknowledged task after this long: longer than any run.
    visibility_timeout_s: int = 7 * 24 * 3600

    limits: Limits = Field(default_factory=Limits)

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'gradwatch.db'}"

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / "data"

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.broker_url

    @cached_property
    def broker_folder(self) -> Path:
        return self.home / "broker"


settings = Settings()
