"""The histogram counts as one C++ loop on the CPU (histogram_kernel.cpp), built at first use.

Eager PyTorch makes about ten passes over the gradient buffer to bin it (a mask, a shift, two
table gathers, a comparison, adds, the bincount with its own minimum and maximum); the C++
loop makes one, and counts the dense layers' activations straight from their tensors with no
concatenation. The columns are decided by the same tables and the same arithmetic, so both
give the same counts, and a run may switch from one to the other when the build finishes
without any histogram changing (tests/workers/engine/test_histograms.py holds them equal).

The build (torch.utils.cpp_extension, g++ and ninja, about 20 s on one core) runs in a
background thread when the first run with histograms starts in a process, and is cached on
disk (`TORCH_EXTENSIONS_DIR`), so later processes only load it. Without a compiler, or on a
GPU (where the PyTorch path is already one kernel a pass), the PyTorch path serves.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("histogram_kernel.cpp")


class _Kernel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = False
        self.module: ModuleType | None = None

    def start(self) -> threading.Event:
        """Build (or load) the kernel in a background thread, once per process; the event is
        set when the build has finished, whether or not it succeeded."""
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._build, daemon=True, name="gradwatch-histogram-kernel").start()
        return self._done

    def _build(self) -> None:
        try:
            from torch.utils.cpp_extension import load

            # -fno-trapping-math lets GCC turn the linear bins' selects into vector code (no
            # floating-point exception is ever looked at); it changes no result.
            flags = ["-O3", "-fno-trapping-math"]
            self.module = load("gradwatch_histograms", [str(SOURCE)], extra_cflags=flags, verbose=False)
        except Exception:  # no compiler or ninja: the PyTorch path goes on serving
            log.warning("building the C++ histogram kernel failed; the PyTorch path serves", exc_info=True)
        finally:
            self._done.set()

    def ready(self) -> ModuleType | None:
        """The built module, or None while it builds (or when it could not be built)."""
        return self.module if self._done.is_set() else None


KERNEL = _Kernel()
