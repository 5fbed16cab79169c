"""A fresh pool child imports torch and the engine in the background, right after the fork.

Importing them takes 3 s of CPU and far longer on a busy machine, and a child's first run is
often one resumed from a dead or departing worker, waiting to move again: measured on the
2-core development machine under load, a run handed back by SIGTERM stood still 18 s on its
new worker (the import of torch, of torch._dynamo at the first optimiser, of scikit-learn)
and moves again in about 1.5 s with the imports done ahead. Still after the fork: CUDA is
never initialised in the prefork parent (importing torch does not initialise it either).

It also starts loading the probes' C++ loops (workers/engine/native.py), which a CPU run waits
for at its start; the first build on a machine takes 20–40 s, a load from the cache milliseconds.

A run that arrives while the import is under way waits for it to finish (`wait`) instead of
importing the same modules from a second thread: two threads importing overlapping module
graphs can hand one of them a partly initialised module.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

_started = False
_done = threading.Event()


def start() -> None:
    global _started
    _started = True
    threading.Thread(target=_import, daemon=True, name="gradwatch-early-import").start()


def wait() -> None:
    """Return once the early import is over (at once where none was started)."""
    if _started:
        _done.wait()


def _import() -> None:
    try:
        import torch._dynamo  # noqa: F401 - the first optimiser built in a process imports it

        import workers.engine  # noqa: F401
        import workers.spec  # noqa: F401
        from workers.engine.row_statistics import NATIVE

        # A CPU run waits for the probes' C++ loops at its start: built (or loaded from the
        # cache) now, in the background, so that the child's first run rarely does.
        NATIVE.start()
    except Exception:  # noqa: BLE001 - the run imports them itself and reports what fails
        logger.warning("importing the engine ahead of the first run failed", exc_info=True)
    finally:
        _done.set()
