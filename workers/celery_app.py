"""The Celery application: `celery -A workers.celery_app worker` (or `gradwatch worker`).

Everything about the queue (broker, serializer, acks_late, prefetch, routes, visibility
timeout) comes from `service.queue.celery_config`, the one place the API shares with
the workers. This module and `workers.tasks` must not import torch: the prefork parent
forks its children after importing them, and CUDA must never be initialised before a
fork. The task imports the engine inside its body, in the child.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from service.config import settings
from service.queue import celery_config, ensure_broker_folders

app = Celery("gradwatch", include=["workers.tasks"])
app.conf.update(celery_config(settings))


@signals.worker_init.connect
def _create_broker_folders(**_: Any) -> None:
    # The embedded broker's folders must exist before the worker declares its queues.
    ensure_broker_folders(settings)
