"""Every per-row statistic of the flat gradient and weight buffers in one pass.

Three paths, one result (within float rounding): a C++ loop on CPUs with AVX2 and FMA
(probe_kernel.cpp, built by native.py), the function below compiled by `torch.compile`
(opt-in), and plain PyTorch, which is the reference the tests compare the others with and the
fallback wherever neither is available (a GPU, no compiler). A run keeps the path it started
with: the clipping factor is computed from these row norms, so a path that changed in the
middle of a run would move its weights by float rounding and make it unreproducible. So a run
on a CPU waits, at its start, for the C++ loop's build to finish (a worker starts it when it
starts; the first build on a machine takes 20–40 s, later processes load it from the cache).

Per row of the (R, C) buffers: ‖g‖, Σg, Σ|g|, the finite count, max |g|, ‖w‖ and ⟨g, w⟩ (the
last one lets ‖Δw‖ of plain SGD be derived on the host, see ParameterProbe). Written as plain
PyTorch, each is its own kernel and its own pass over the buffer; the same function compiled by
`torch.compile` (Inductor: C++ on a CPU, Triton on CUDA, one code path for both) becomes one
kernel that reads g and w once. Measured for the MLP of bench/probe_overhead.py (90 × 1024
rows) on a loaded 2-core CPU, one thread: see the README's Performance section.

The first compile takes 10 s to minutes, and must never land in a run's hot path: a worker
process starts it at its start (`warm_process()`, from workers/celery_app.py) in a background
thread, and the plain path serves until it is done. Inductor keeps what it compiled in its
on-disk cache, and the sizes are compiled as symbols (`dynamic=True`), so every run of any model
in the process reuses the kernel; each run's own buffer layout is checked against its guards
once, again in a background thread. A process that never warmed it (tests, benchmarks that do
not ask) never compiles. The plain path stays as the fallback (no C++ compiler, a failed
compile, a device not warmed) and as the reference the tests compare the compiled kernel with.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from .native import NativeKernel

if TYPE_CHECKING:
    from .probes import FlatParameters

log = logging.getLogger(__name__)

NATIVE = NativeKernel("gradwatch_probes", ["probe_kernel.cpp", "lstm_kernel.cpp"], ["-O3"], headers=("vector_math.h",))
# How long a run's start waits for the C++ loop's build before it takes the plain path for its
# whole life: a first build takes 20–40 s on one core, several times that on a loaded machine.
NATIVE_WAIT_S = 300.0

STATISTICS = 7  # ‖g‖, Σg, Σ|g|, #finite, max |g|, ‖w‖, ⟨g, w⟩ per row, in this order


def row_statistics(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(R, C) gradient and weight → (7, R), in the order of STATISTICS. Written for Inductor,
    which fuses every reduction here into one loop over the row; eager, it is 10 kernels."""
    magnitude = grad.abs()
    finite = (magnitude < math.inf).to(grad.dtype)  # false for ±Inf and NaN
    return torch.stack(
        [
            torch.sqrt((grad * grad).sum(1)),
            grad.sum(1),
            magnitude.sum(1),
            finite.sum(1),
            magnitude.amax(1),  # NaN propagates, as in torch.amax
            torch.sqrt((weight * weight).sum(1)),
            (grad * weight).sum(1),
        ]
    )


def plain_row_statistics(block: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, product: bool) -> None:
    """The plain-PyTorch path, allocation-free: writes `out` (7, R) with `out=` kernels.

    `block` is FlatParameters.grad_block (3, R, C): the gradient, then scratch rows for |g| and
    the finite flags, so that Σg, Σ|g| and the finite count are one reduction over the block.
    ⟨g, w⟩ is computed only when `product` is set (SGD with weight decay)."""
    grad, magnitude, finite = block[0], block[1], block[2]
    torch.linalg.vector_norm(grad, dim=1, out=out[0])
    torch.abs(grad, out=magnitude)
    # |g| < ∞ written as floats: bool kernels are slow on a CPU.
    torch.lt(magnitude, math.inf, out=finite)
    torch.sum(block, dim=2, out=out[1:4])
    torch.amax(magnitude, dim=1, out=out[4])
    torch.linalg.vector_norm(weight, dim=1, out=out[5])
    if product:
        torch.sum(grad * weight, dim=1, out=out[6])


class _Compiled:
    """The process's one compiled kernel, and the buffer layouts it has been called with."""

    def __init__(self) -> None:
        self.function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self.ready: dict[tuple, threading.Event] = {}
        self.lock = threading.Lock()

    def warm(self, grad: torch.Tensor, weight: torch.Tensor) -> threading.Event:
        """Call the compiled kernel once on buffers like these, in a background thread; the event
        is set when the hot path can call it on them without compiling. The first call for a
        device and dtype compiles; a later one only checks the guards (or, should they fail for
        this layout, compiles again, still off the hot path)."""
        key = (grad.device.type, grad.dtype, tuple(grad.shape), grad.stride(), tuple(weight.shape), weight.stride())
        with self.lock:
            event = self.ready.get(key)
            if event is not None:
                return event
            event = self.ready[key] = threading.Event()
            if self.function is None:
                self.function = torch.compile(row_statistics, dynamic=True)
        # Zeros of the same layout, so the run's buffers are never read from two threads.
        sample_grad = torch.zeros_like(grad, memory_format=torch.preserve_format)
        sample_weight = torch.zeros_like(weight, memory_format=torch.preserve_format)
        thread = threading.Thread(target=self._call, args=(sample_grad, sample_weight, event), daemon=True, name="gradwatch-row-statistics")
        thread.start()
        return event

    def _call(self, grad: torch.Tensor, weight: torch.Tensor, event: threading.Event) -> None:
        try:
            assert self.function is not None
            self.function(grad, weight)
        except Exception:  # no C++ compiler, an unsupported device: the plain path goes on serving
            log.warning("compiling the fused row statistics failed; the plain path serves", exc_info=True)
            return
        event.set()


    def warmed(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether this process has started compiling for the device type and dtype."""
        return any(key[:2] == (device.type, dtype) for key in self.ready)


COMPILED = _Compiled()


def native_module(device: torch.device, dtype: torch.dtype) -> ModuleType | None:
    """The C++ probe loops for buffers on this device, waiting for their build; None where they cannot serve."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        return None
    if not NATIVE.start().wait(NATIVE_WAIT_S):
        log.warning("the C++ probe loops were still building after %.0f s; this run takes the plain paths", NATIVE_WAIT_S)
        return None
    module = NATIVE.module
    return module if module is not None and module.accelerated() else None


def warm_process() -> None:
    """Start compiling the kernel for the CPU (and CUDA, when present) in the background."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        sample = torch.zeros(4, 64, device=device)
        COMPILED.warm(sample, sample.clone())


class RowStatistics:
    """The row statistics of one run's buffers (a FlatParameters): compiled when asked for and
    warm, else the C++ loop (`native`, on a CPU that runs it, reading the gradients where autograd
    left them), else plain (both of these over the gradients' flat copy)."""

    def __init__(self, flat: FlatParameters, fused: bool, native: bool = True) -> None:
        self.flat, weight = flat, flat.weight
        use = fused and COMPILED.warmed(weight.device, weight.dtype)
        self._ready = COMPILED.warm(weight, weight) if use else None
        self._native = native_module(weight.device, weight.dtype) if native and not use else None

    @property
    def path(self) -> str:
        """Which path serves now: "compiled", "native" or "plain"."""
        return "compiled" if self.compiled else "native" if self._native is not None else "plain"

    @property
    def compiled(self) -> bool:
        return self._ready is not None and self._ready.is_set()

    def __call__(self, out: torch.Tensor, grads: list[torch.Tensor], product: bool) -> None:
        """Write the (7, R) statistics of `grads` into `out` (rows of the Recorder's buffer)."""
        weight = self.flat.weight
        if self._native is not None and not self.compiled:
            self._native.row_statistics(grads, weight, out, product)
            return
        block = self.flat.gather(grads)
        if self.compiled:
            assert COMPILED.function is not None
            out.copy_(COMPILED.function(block[0], weight))
        else:
            plain_row_statistics(block, weight, out, product)
