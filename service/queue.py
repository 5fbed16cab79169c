"""Sending work to the workers: the Celery configuration both sides share, and the
API's `Enqueuer`.

The API never imports the worker's code (nor torch): it sends the task by name,
`gradwatch.train`, with the experiment id, after the experiment row is committed.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

from celery import Celery

from service.config import Settings, settings as default_settings

log = logging.getLogger("gradwatch.queue")

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

    def waiting_ids(self, queue: str) -> set[str] | None:
        """The experiment ids whose `gradwatch.train` messages wait in `queue`, or None
        when the broker cannot be inspected (the reconciler then re-sends regardless).

        Only waiting messages count: a message a worker has taken (Redis keeps it under
        `unacked` until the visibility timeout) no longer brings its experiment to a
        worker if that worker died before claiming it."""
        try:
            if self.settings.uses_embedded_broker:
                raw = _filesystem_messages(broker_folders(self.settings)["queue"], queue)
            else:
                raw = self._redis_messages(queue)
        except Exception:  # noqa: BLE001 - an unreadable broker is answered by re-sending
            log.warning("could not list the messages waiting in queue %s", queue, exc_info=True)
            return None
        if raw is None:
            return None
        return {experiment_id for message in raw if (experiment_id := task_experiment_id(message))}

    def _redis_messages(self, queue: str) -> list[bytes] | None:
        with self.celery.connection_for_write() as connection:
            channel = connection.default_channel
            if not hasattr(channel, "_q_for_pri"):  # not the Redis transport
                return None
            client = channel.client
            messages: list[bytes] = []
            # kombu keeps one list per priority step (`cpu`, `cpu\x06\x163`, …).
            for key in dict.fromkeys(channel._q_for_pri(queue, p) for p in channel.priority_steps):
                messages += client.lrange(key, 0, -1)
            return messages

    def close(self) -> None:
        if self._celery is not None:
            self._celery.close()


def _filesystem_messages(folder: Path, queue: str) -> list[bytes]:
    """The messages kombu's filesystem transport holds for `queue`: one file each, named
    `<ms>_<uuid>.<queue>.msg`; a file a worker takes meanwhile is simply missed."""
    messages = []
    for path in folder.glob(f"*.{queue}.msg"):
        try:
            messages.append(path.read_bytes())
        except FileNotFoundError:
            continue
    return messages


def task_experiment_id(raw: bytes | str) -> str | None:
    """The experiment id of one raw `gradwatch.train` message as kombu stores it (the same
    JSON envelope on Redis and on the filesystem), or None for anything else."""
    try:
        message = json.loads(raw)
        if (message.get("headers") or {}).get("task") != TRAIN_TASK:
            return None
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]  # Celery's protocol 2: [args, kwargs, embed]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
