"""The histogram counts as one C++ loop on the CPU (histogram_kernel.cpp), built at first use.

Eager PyTorch makes about ten passes over the gradient buffer to bin it (a mask, a shift, two
table gathers, a comparison, adds, the bincount with its own minimum and maximum); the C++
loop makes one, and counts the dense layers' activations straight from their tensors with no
concatenation. The columns are decided by the same tables and the same arithmetic, so both
give the same counts, and a run may switch from one to the other when the build finishes
without any histogram changing (tests/workers/engine/test_histograms.py holds them equal).

The build (torch.utils.cpp_extension, g++ and ninja, about 20 s on one core) runs in a
background thread when the first run with histograms starts in a process, and is cached on
disk (`GRADWATCH_KERNEL_CACHE`, by default ~/.cache/gradwatch/kernels), so later processes
only load it. Without a compiler, or on a GPU (where the PyTorch path is already one kernel a
pass), the PyTorch path serves.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("histogram_kernel.cpp")
NAME = "gradwatch_histograms"
# -fno-trapping-math lets GCC turn the linear bins' selects into vector code (no floating-point
# exception is ever looked at); it changes no result.
FLAGS = ["-O3", "-fno-trapping-math"]


def cache_directory() -> Path:
    root = os.environ.get("GRADWATCH_KERNEL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gradwatch"
    return Path(root) / "kernels"


def built_path() -> Path:
    """Where the module built from this source, these flags and this torch is kept."""
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + torch.__version__.encode()).hexdigest()[:16]
    return cache_directory() / f"{NAME}-{digest}.so"


def _import(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(NAME, str(path))
    spec = importlib.util.spec_from_file_location(NAME, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def build() -> ModuleType:
    """Load the cached module, or build it in a private directory and publish it by rename.

    Not torch.utils.cpp_extension's shared build directory: its lock file outlives a process
    that dies while building (a short-lived process whose background build is cut off at its
    exit), and every later process would then wait on it forever. Here builders never wait on
    each other: two that race both build, and the second rename replaces an identical file.
    """
    from torch.utils.cpp_extension import load

    target = built_path()
    if target.exists():
        return _import(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="build-") as scratch:
        module = load(NAME, [str(SOURCE)], extra_cflags=FLAGS, build_directory=scratch, verbose=False)
        staged = target.with_suffix(f".{os.getpid()}.part")
        shutil.copyfile(Path(scratch) / f"{NAME}.so", staged)
        os.replace(staged, target)
    return module  # loaded from the scratch copy, which stays mapped after its removal


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
            self.module = build()
        except Exception:  # no compiler or ninja: the PyTorch path goes on serving
            log.warning("building the C++ histogram kernel failed; the PyTorch path serves", exc_info=True)
        finally:
            self._done.set()

    def ready(self) -> ModuleType | None:
        """The built module, or None while it builds (or when it could not be built)."""
        return self.module if self._done.is_set() else None


KERNEL = _Kernel()
