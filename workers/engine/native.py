"""gradwatch's small C++ loops for the CPU, built at first use with torch.utils.cpp_extension.

Each `NativeKernel` is one module built from C++ sources (and the headers they include) in this
folder. Its build (g++ and ninja, 20–40 s on one
core) runs in a background thread once per process, and is cached on disk
(`GRADWATCH_KERNEL_CACHE`, by default ~/.cache/gradwatch/kernels) under a digest of the source,
the flags and the torch version, so later processes only load it. Where it cannot be built (no
compiler) the PyTorch path that every caller keeps serves instead.
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


def cache_directory() -> Path:
    root = os.environ.get("GRADWATCH_KERNEL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gradwatch"
    return Path(root) / "kernels"


def _import(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class NativeKernel:
    """C++ sources built into one Python module, in the background, once per process."""

    def __init__(self, name: str, sources: list[str], flags: list[str], headers: tuple[str, ...] = ()) -> None:
        self.name = name
        self.sources = [Path(__file__).with_name(source) for source in sources]
        self.headers = [Path(__file__).with_name(header) for header in headers]  # digested, not compiled
        self.flags = flags
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = False
        self.module: ModuleType | None = None

    def built_path(self) -> Path:
        """Where the module built from these sources and headers, these flags and this torch is kept."""
        import torch

        text = b"".join(path.read_bytes() for path in self.sources + self.headers)
        digest = hashlib.sha256(text + " ".join(self.flags).encode() + torch.__version__.encode()).hexdigest()[:16]
        return cache_directory() / f"{self.name}-{digest}.so"

    def build(self) -> ModuleType:
        """Load the cached module, or build it in a private directory and publish it by rename.

        Not torch.utils.cpp_extension's shared build directory: its lock file outlives a process
        that dies while building (a short-lived process whose background build is cut off at its
        exit), and every later process would then wait on it forever. Here builders never wait
        on each other: two that race both build, and the second rename replaces an identical file.
        """
        from torch.utils.cpp_extension import load

        target = self.built_path()
        if target.exists():
            return _import(self.name, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix="build-") as scratch:
            module = load(self.name, [str(path) for path in self.sources], extra_cflags=self.flags, build_directory=scratch, verbose=False)
            staged = target.with_suffix(f".{os.getpid()}.part")
            shutil.copyfile(Path(scratch) / f"{self.name}.so", staged)
            os.replace(staged, target)
        return module  # loaded from the scratch copy, which stays mapped after its removal

    def start(self) -> threading.Event:
        """Build (or load) the module in a background thread, once per process; the event is
        set when the build has finished, whether or not it succeeded."""
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._build, daemon=True, name=f"gradwatch-{self.name}").start()
        return self._done

    def _build(self) -> None:
        try:
            self.module = self.build()
        except Exception:  # no compiler or ninja: the PyTorch path goes on serving
            log.warning("building the C++ kernel %s failed; the PyTorch path serves", self.name, exc_info=True)
        finally:
            self._done.set()

    def ready(self) -> ModuleType | None:
        """The built module, or None while it builds (or when it could not be built)."""
        return self.module if self._done.is_set() else None
