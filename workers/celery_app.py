"""The Celery application: `celery -A workers.celery_app worker` (or `gradwatch worker`).

Everything about the queue (broker, serializer, acks_late, prefetch, routes, visibility
timeout) comes from `service.queue.celery_config`, the one place the API shares with
the workers. This module and `workers.tasks` must not import torch: the prefork parent
forks its children after importing them, and CUDA must never be initialised before a
fork. The task imports the engine inside its body, in the child.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

from service.config import settings
from service.lifeline import die_with_parent
from service.queue import celery_config, ensure_broker_folders
from workers import early_import

app = Celery("gradwatch", include=["workers.tasks", "workers.handback"])
# Imported by the worker's main process before it forks its pool: the children's parent.
_WORKER_PID = os.getpid()
app.conf.update(celery_config(settings))


@signals.worker_init.connect
def _create_broker_folders(**_: Any) -> None:
    # The embedded broker's folders must exist before the worker declares its queues.
    ensure_broker_folders(settings)


@signals.worker_process_init.connect
def _die_with_the_worker(**_: Any) -> None:
    # A pool child must not outlive its worker (SIGKILLed, or killed with `gradwatch up`):
    # an orphan would go on training a run nobody would ever store (service/lifeline.py).
    die_with_parent(_WORKER_PID)


@signals.worker_process_init.connect
def _import_the_engine_early(**_: Any) -> None:
    # Ahead of the child's first run, which is often a resumed one (workers/early_import.py).
    early_import.start()


@signals.worker_process_init.connect
def _warm_fused_probes(**_: Any) -> None:
    # The parameter probes' compiled kernel takes seconds to minutes to build the first time:
    # started here, in the child (torch may be imported after the fork), in a background
    # thread, so that no run's hot path waits for it (workers/engine/row_statistics.py).
    if settings.worker_compile_probes:
        from workers.engine.row_statistics import warm_process

        warm_process()
