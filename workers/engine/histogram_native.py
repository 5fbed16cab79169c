"""The histogram counts as one C++ loop on the CPU (histogram_kernel.cpp), built at first use.

Eager PyTorch makes about ten passes over the gradient buffer to bin it (a mask, a shift, two
table gathers, a comparison, adds, the bincount with its own minimum and maximum); the C++
loop makes one, and counts the dense layers' activations straight from their tensors with no
concatenation. The columns are decided by the same tables and the same arithmetic, so both
give the same counts, and a run may switch from one to the other when the build finishes
without any histogram changing (tests/workers/engine/test_histograms.py holds them equal).

The build (native.py) starts in a background thread when the first run with histograms
starts in a process. Without a compiler, or on a GPU (where the PyTorch path is already one
kernel a pass), the PyTorch path serves.
"""

from __future__ import annotations

from .native import NativeKernel, cache_directory

# -fno-trapping-math lets GCC turn the linear bins' selects into vector code (no floating-point
# exception is ever looked at); it changes no result.
KERNEL = NativeKernel("gradwatch_histograms", ["histogram_kernel.cpp"], ["-O3", "-fno-trapping-math"])
build = KERNEL.build
built_path = KERNEL.built_path

__all__ = ["KERNEL", "build", "built_path", "cache_directory"]
