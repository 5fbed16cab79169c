"""Sending work to the workers: the Celery configuration both sides share, and the
API's `Enqueuer`.

The API never imports the worker's code (nor torch): it sends the task by name,
`gradwatch.train`, with the experiment id, after the experiment row is committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery

from service.config import Settings, settings as default_settings

TRAIN_TASK = "gradwatch.train"
QUEUES = ("cpu", "gpu")


def broker_folders(settings: Settings) -> dict[str, Path]:
    """The embedded broker's folders (kombu's filesystem transport).

    Producer (API) and consumer (worker) share one configuration, so messages are
    written to and read from the same folder: kombu writes to `data_folder_out` and
    reads from `data_folder_in`, and only when the two are equal do they meet.
    """
    root = settings.broker_folder
    return {
        "queue": root / "queue",
        "processed": root / "processed",
        "control": root / "control",
    }


def ensure_broker_folders(settings: Settings) -> None:
    if settings.uses_embedded_broker:
        for folder in broker_folders(settings).values():
            folder.mkdir(parents=True, exist_ok=True)


def celery_config(settings: Settings = default_settings) -> dict[str, Any]:
    """Celery settings for the API's sender and the workers' app alike.

    JSON only (never pickle); acks_late with prefetch 1 because runs are long and the
    task is idempotent (it claims its experiment atomically); a visibility timeout longer
    than any run, so Redis does not hand a running task to a second worker.
    """
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.uses_embedded_broker:
        folders = broker_folders(settings)
        transport_options.update(
            data_folder_in=str(folders["queue"]),
            data_folder_out=str(folders["queue"]),
            processed_folder=str(folders["processed"]),
            control_folder=str(folders["control"]),
            store_processed=False,
        )
    return {
        "broker_url": settings.broker_url or "filesystem://",
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        "task_routes": {TRAIN_TASK: {"queue": "cpu"}},
        # Fail a send quickly when the broker is down: the API answers 503 instead of
        # hanging the request.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    }


class Enqueuer:
    """Sends `gradwatch.train(experiment_id)` to a queue; injected into the API routes."""

    def __init__(self, settings: Settings = default_settings) -> None:
        self.settings = settings
        self._celery: Celery | None = None

    @property
    def celery(self) -> Celery:
        # Built on first use: creating the API touches no broker.
        if self._celery is None:
            app = Celery("gradwatch-api", set_as_current=False)
            app.config_from_object(celery_config(self.settings))
            self._celery = app
        return self._celery

    def enqueue(self, experiment_id: str, queue: str) -> None:
        if queue not in QUEUES:
            raise ValueError(f"unknown queue {queue!r}; expected one of {QUEUES}")
        ensure_broker_folders(self.settings)
        self.celery.send_task(TRAIN_TASK, args=[experiment_id], queue=queue)

    def close(self) -> None:
        if self._celery is not None:
            self._celery.close()
