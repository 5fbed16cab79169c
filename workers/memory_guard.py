"""The worker's own guard: a run that needs more memory than it may have fails, the worker lives.

The API refuses specs whose estimate (service/budgets/memory.py) is over the limit, but an
estimate can be wrong, or a worker smaller than the limit assumes. Two layers:
- `address_space_cap`: around one training run, the prefork child's RLIMIT_AS soft limit
  is set to its size at the start plus the worker's allowance, and restored afterwards.
  An allocation beyond it then fails inside the process (malloc/mmap return ENOMEM, which
  torch raises as "DefaultCPUAllocator: can't allocate memory" and numpy as MemoryError)
  instead of the kernel's OOM killer ending the worker, and possibly others with it.
  Address space rather than resident memory because nothing else is enforced by Linux
  (RLIMIT_RSS is ignored) short of cgroups, which a worker cannot set on itself. Linux
  only (the size comes from /proc/self/statm); never for CUDA runs, whose driver maps
  far more address space than it uses.
- `is_out_of_memory`: recognises the allocators' errors (torch.OutOfMemoryError on CUDA,
  MemoryError, the CPU allocator's RuntimeError), so the run ends `failed` with an
  "out of memory" message naming its estimate.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from typing import Any

from service.budgets import estimate_spec_memory, format_bytes

# How the allocators word a failed allocation (torch's CPU allocator, glibc via errno 12,
# CUDA's caching allocator, numpy).
OUT_OF_MEMORY_TEXT = ("can't allocate memory", "defaultcpuallocator", "cannot allocate memory", "out of memory", "unable to allocate")


def _address_space() -> int | None:
    """This process's virtual size in bytes, or None where the platform does not say."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize()


@contextlib.contextmanager
def address_space_cap(allowance_bytes: int) -> Iterator[int | None]:
    """Limit how much address space the block may add; yields the cap (None: none set)."""
    size = _address_space() if allowance_bytes > 0 and hasattr(resource, "RLIMIT_AS") else None
    if size is None:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + allowance_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield None  # the worker already runs under a tighter limit: keep it
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield allowance_bytes
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is an allocator running out of memory."""
    seen: BaseException | None = error
    for _ in range(8):  # the cause chain, e.g. the writer wrapping an error
        if seen is None:
            return False
        if isinstance(seen, MemoryError) or type(seen).__name__ == "OutOfMemoryError":
            return True
        if isinstance(seen, RuntimeError) and any(text in str(seen).lower() for text in OUT_OF_MEMORY_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def out_of_memory_message(error: BaseException, spec: dict[str, Any], allowance: int | None) -> str:
    """What the user reads in `error`: that memory ran out, the estimate, and the cap."""
    try:
        estimate = f"its estimate was {format_bytes(estimate_spec_memory(spec).total)}"
    except (KeyError, TypeError, ValueError):  # a spec stored by an older version
        estimate = "its estimate is unknown"
    cap = (
        f"this worker lets a run add {format_bytes(allowance)} of address space (GRADWATCH_WORKER_MEMORY_CAP_BYTES)"
        if allowance
        else "the machine had no more memory to give"
    )
    detail = " ".join(str(error).split())[:300] or type(error).__name__
    return (
        f"out of memory: the run needed more memory than it could get ({estimate}; {cap}). "
        f"Lower training.batch_size, dataset.limit, dataset.seq_len or the model's size. ({detail})"
    )
