"""Distributions: histograms of log10|∂L/∂θ| per parameter tensor and of each layer's
pre-activation and output, on every `probes.histogram_every`-th recorded step.

Bins are fixed for the whole run and every run, so histograms compare across steps and
experiments without re-binning (TensorBoard re-bins into 30 buckets; W&B's 64 linear bins
drop NaN/Inf). Every histogram has B + 4 columns, exact counts:

    0: exact zeros | 1: below the first edge | 2 … B+1: [edges[i], edges[i+1]) | B+2: at or
    beyond the last edge | B+3: NaN and ±Inf

Gradients are binned on log10|g| over 1e-12 … 1e4, eight bins a decade: vanishing shows as
mass moving left, exploding as mass moving right. Activations are binned on their value over
[−8, 8) in steps of 1/8, where a σ or tanh unit's saturation shows as mass piling at the
ends of its range (Glorot & Bengio 2010, Fig. 2–4) and its pre-activation beyond ±4.

All gradient tensors are one pass over the flat gradient buffer: the column of each element
from its bit pattern (LogMagnitudeColumns), then one bincount over (tensor, column) pairs; the
zero padding of the buffer's rows is subtracted on the host. The activations of a step are one
pass too, by arithmetic on their values. Every count is exactly NumPy's histogram of the same
values (of log10|g| computed in float64 for the gradients). Nothing is read on the host in the
step; `take()` copies every pending histogram to the host at once. On a CPU the same counts
come from one C++ loop once it is built (histogram_native.py).

MLP layers give `act_pre` (s = Wx + b) and `act_out` (f(s)); recurrent layers run fused
kernels that keep s inside, so they give `act_out` (h_t over every timestep) only.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from .histogram_native import KERNEL
from .probes import FlatParameters

from .records import HistogramBatch

if TYPE_CHECKING:
    from .lstm_kernel import LstmProbe
    from .models import RecurrentLayer
    from .probes import ForwardTaps

BINS = 128
GRADIENT_EDGES = np.linspace(-12.0, 4.0, BINS + 1)  # log10|g|: eight bins a decade
ACTIVATION_EDGES = np.linspace(-8.0, 8.0, BINS + 1)  # s or f(s): 1/8 wide
COLUMNS = BINS + 4
ZERO, BELOW, ABOVE, NONFINITE = 0, 1, BINS + 2, BINS + 3
EDGES = {"grad_log10_abs": GRADIENT_EDGES, "act_pre": ACTIVATION_EDGES, "act_out": ACTIVATION_EDGES}


LINEAR_LOW, LINEAR_HIGH = float(ACTIVATION_EDGES[0]), float(ACTIVATION_EDGES[-1])
PER_LINEAR_UNIT = BINS / (LINEAR_HIGH - LINEAR_LOW)  # 8 bins a unit
# Columns are int32, not int64: on a CPU the float → int32 cast is 5× faster and bincount over
# int32 2× (measured for 100,000 values: 16 against 85 µs, 95 against 189 µs), and every
# column index (tensors × lanes × 132 columns) is far below 2³¹.
COLUMN_DTYPE = torch.int32
# Each group's counts are kept in LANES interleaved copies (element i counts in copy i mod
# LANES), summed after the bincount. A bincount is a chain of read-increment-writes; when
# neighbouring elements often hit the same counter (a gradient buffer's runs of zeros among a
# few busy bins), the CPU keeps mispredicting whether a load depends on a store still in
# flight. Interleaving costs nothing (the lane is part of each element's precomputed offset)
# and halves the bincount of an MLP's gradient buffer (measured, 104,448 values: 93 µs with
# one copy, 49 µs with 8).
LANES = 8
# grouped_value_counts's arithmetic, for the C++ loop: per unit, shift, below, above, non-finite, columns.
LINEAR_COLUMNS = (PER_LINEAR_UNIT, 2 - LINEAR_LOW * PER_LINEAR_UNIT, BELOW, ABOVE, NONFINITE, COLUMNS)
SIGNED_INTEGER = {16: torch.int16, 32: torch.int32, 64: torch.int64}


def element_offsets(sizes: list[int] | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(Σ sizes,) COLUMN_DTYPE: element i of group g counts at (g·LANES + i mod LANES)·(B + 4)."""
    sizes_t = torch.as_tensor(np.asarray(sizes, dtype=np.int64), device=device)
    groups = torch.repeat_interleave(torch.arange(len(sizes_t), device=device), sizes_t)
    lanes = torch.arange(groups.numel(), device=device) % LANES
    return ((groups * LANES + lanes) * COLUMNS).to(COLUMN_DTYPE)


def grouped_bincount(column: torch.Tensor, group_count: int, laned: bool) -> torch.Tensor:
    """(group_count, B + 4) int64 counts of flat columns (offsets from element_offsets when `laned`)."""
    lanes = LANES if laned else 1
    counts = torch.bincount(column, minlength=group_count * lanes * COLUMNS)
    counts = counts.view(group_count, lanes, COLUMNS)
    return counts.sum(1) if laned else counts[:, 0]


@functools.lru_cache(maxsize=None)
def _magnitude_tables(dtype: torch.dtype, key_mantissa_bits: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """The column of every key of the magnitude's bit pattern, and the one edge inside it."""
    info = torch.finfo(dtype)
    float_type = np.dtype(str(dtype).removeprefix("torch."))
    int_type = np.dtype(f"int{info.bits}")
    shift = _mantissa_bits(dtype) - key_mantissa_bits
    infinity = int(np.array(np.inf, dtype=float_type).view(int_type))

    def first_at_or_above(edge: float) -> int:
        """The smallest magnitude pattern b with log10(value(b)) ≥ edge, decided as NumPy does
        in float64, so that the engine's counts are those of np.histogram of log10|g|."""
        low, high = 1, infinity
        while low < high:
            middle = (low + high) // 2
            value = np.array(middle, dtype=int_type).view(float_type).astype(np.float64)
            if np.log10(value) >= edge:
                high = middle
            else:
                low = middle + 1
        return low

    # The column of a magnitude pattern b is how many of these starts are ≤ b: 0 (zero), 1
    # (below, from the smallest subnormal), the bins, above, non-finite (from +Inf; NaNs lie above it).
    starts = np.array([1, *(first_at_or_above(edge) for edge in GRADIENT_EDGES), infinity], dtype=np.int64)
    keys = np.arange(1 << (info.bits - 1 - shift), dtype=np.int64)
    first, last = keys << shift, ((keys + 1) << shift) - 1
    column_first = np.searchsorted(starts, first, side="right")
    column_last = np.searchsorted(starts, last, side="right")
    assert (column_last - column_first <= 1).all(), "a key spans two edges"
    inside = starts[np.minimum(column_first, len(starts) - 1)]
    next_start = np.where(column_last > column_first, inside, np.iinfo(int_type).max)
    return shift, (1 << (info.bits - 1)) - 1, column_first.astype(np.int32), next_start.astype(int_type)


def _mantissa_bits(dtype: torch.dtype) -> int:
    return {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}[dtype]


class LogMagnitudeColumns:
    """Where log10|v| falls, read from the bits of |v| through a small table: no logarithm.

    A float's bit pattern, sign cleared, orders magnitudes as integers do, so each edge 10^e
    is one integer threshold: the smallest pattern NumPy's float64 log10 puts at or above e.
    The pattern's top bits (the exponent and two mantissa bits) are a key whose range of
    magnitudes spans a factor of at most 1.25, less than the 10^(1/8) ≈ 1.33 between edges,
    so at most one threshold lies inside it: the column is the key's first column, plus one
    where the pattern reaches that threshold. Zero, subnormals (below), ±Inf and NaN
    (non-finite) fall out of the same comparison. Exact, and integer-only, so every device and
    every compiled form of it counts the same; on a CPU it is 1.3× faster than the fastest
    logarithm-based form (104,448 float32 values: 120 µs against 159 µs, which needed log10's
    inputs raised off the subnormals: log10 of a zero or subnormal is on the CPU's slow path,
    1.4 ms for the same call).
    """

    KEY_MANTISSA_BITS = 2

    def __init__(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        shift, mask, first_column, next_start = _magnitude_tables(dtype, self.KEY_MANTISSA_BITS)
        self._integer = SIGNED_INTEGER[torch.finfo(dtype).bits]
        self.shift, self._mask = shift, mask
        self.first_column = torch.as_tensor(first_column, device=device).to(COLUMN_DTYPE)
        self.next_start = torch.as_tensor(next_start, device=device)
        # Kept between calls (a run histograms the same buffer every time): the same memory
        # each step, rather than four fresh buffers the size of the gradients.
        self._scratch: tuple[torch.Tensor, ...] = ()

    def columns(self, values: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) COLUMN_DTYPE column of each value of `values` (flattened), plus `offsets`; the
        result is overwritten by the next call."""
        patterns = values.reshape(-1).view(self._integer)
        if not self._scratch or self._scratch[0].shape != patterns.shape or self._scratch[0].device != patterns.device:
            self._scratch = (
                torch.empty_like(patterns), torch.empty_like(patterns), torch.empty_like(patterns, dtype=COLUMN_DTYPE)
            )
        magnitude, key, column = self._scratch
        torch.bitwise_and(patterns, self._mask, out=magnitude)
        torch.bitwise_right_shift(magnitude, self.shift, out=key)
        torch.index_select(self.first_column, 0, key, out=column)
        reached = magnitude.ge_(self.next_start.index_select(0, key))  # in place: 1 or 0 as integers
        column.add_(reached if reached.dtype == COLUMN_DTYPE else reached.to(COLUMN_DTYPE))
        return column if offsets is None else column.add_(offsets)


def log_magnitude_counts(values: torch.Tensor, offsets: torch.Tensor | None, group_count: int, columns: LogMagnitudeColumns) -> torch.Tensor:
    """(group_count, B + 4) int64 histograms of log10|v|; `offsets` from element_offsets over
    `values` flattened, or None for one group."""
    column = columns.columns(values, offsets)
    return grouped_bincount(column, group_count, offsets is not None)


def value_counts(values: torch.Tensor) -> torch.Tensor:
    """(B + 4,) int64 histogram of the values themselves over [−8, 8)."""
    return grouped_value_counts(values.reshape(-1), None, 1)[0]


def grouped_value_counts(values: torch.Tensor, offsets: torch.Tensor | None, group_count: int) -> torch.Tensor:
    """(group_count, B + 4) int64 histograms of flat `values` over [−8, 8); `offsets` from
    element_offsets, or None for one group.

    One pass for every group, and only float arithmetic: a layer's (B, H) activations are
    small, so separate kernels per layer cost more in launches than in work, and comparisons
    (bool tensors, `where`) are several times slower on a CPU than arithmetic (measured, 38,400
    values: 266 µs with `isfinite`/`where`, 109 µs this way). Adding v·0 turns ±Inf into NaN
    (Inf·0 is NaN) and leaves every finite v exactly; clamping keeps NaN; multiplying by
    sign|v| sends exact zeros (either sign) to column 0 and keeps NaN; NaN then becomes the
    non-finite column."""
    finite_or_nan = values.mul(0.0).add_(values)
    # floor(v·8) before the shift: v·8 is exact (8 is a power of two), and so is adding 66 to an
    # integer, where v·8 + 66 would round a tiny negative v up into the bin above 0.
    scaled = finite_or_nan.mul(PER_LINEAR_UNIT).floor_().add_(2 - LINEAR_LOW * PER_LINEAR_UNIT)  # bin i ↦ 2 + i
    scaled.clamp_(BELOW, ABOVE)  # below 1, above B + 2
    scaled.mul_(finite_or_nan.abs().sign_())  # zeros → ZERO (0)
    scaled.nan_to_num_(nan=NONFINITE)
    column = scaled.to(COLUMN_DTYPE)
    if offsets is not None:
        column.add_(offsets)
    return grouped_bincount(column, group_count, offsets is not None)


class HistogramProbe:
    """Collects the histograms of the recorded steps it is asked to, and hands them out by flush.

    Per histogram step: the model's forward pass runs with `taps(inner)` (the model hands its
    pre-activations and outputs to it, and it passes them on to the run's other taps), then
    `record(step, grads)` after backward and before clipping, so the gradient histograms describe
    ∂L/∂θ itself.
    """

    def __init__(self, names: list[str], flat: FlatParameters) -> None:
        self._names = list(names)
        self._flat = flat
        device = flat.weight.device
        rows = np.diff(np.append(flat.row_starts, flat.rows))  # rows of each tensor
        self._columns = LogMagnitudeColumns(flat.weight.dtype, device)
        self._offsets = element_offsets(rows * flat.width, device)  # over the (R, C) buffer, row-major
        self._bounds = torch.as_tensor(np.append(flat.row_starts, flat.rows) * flat.width, dtype=torch.int64)
        # On a CPU, the C++ loop once it is built (the same counts, in one pass instead of ten).
        self._native = device.type == "cpu"
        if self._native:
            KERNEL.start()
        self._padding = (flat.padded - flat.numel).astype(np.int64)  # zeros of each tensor's padding
        self._inner: ForwardTaps | None = None
        self._captured: dict[tuple[str, str], torch.Tensor] = {}
        self._dense: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (layer, s, f(s)) of this step
        self._dense_offsets: dict[tuple[int, ...], torch.Tensor] = {}
        self.keys: tuple[tuple[str, str], ...] | None = None  # fixed by the first histogram step
        self._steps: list[int] = []
        self._counts: list[torch.Tensor] = []  # (K, B + 4) int64 per histogram step

    # --- the model's taps for one forward pass (see ForwardTaps) ----------------------------

    def taps(self, inner: ForwardTaps | None) -> HistogramProbe:
        self._inner = inner
        return self

    def dense(self, index: int, pre: torch.Tensor, act: torch.Tensor) -> None:
        if self._inner is not None:
            self._inner.dense(index, pre, act)
        # Kept (the model never changes s or f(s) in place) and counted with every other dense
        # layer's in one pass by record().
        self._dense.append((f"layers.{index}", pre.detach(), act.detach()))

    def head(self, out: torch.Tensor) -> None:
        if self._inner is not None:
            self._inner.head(out)

    def kernel_probe(self, index: int, layer: RecurrentLayer) -> LstmProbe | None:
        return self._inner.kernel_probe(index, layer) if self._inner is not None else None

    def recurrent(self, index: int, layer: RecurrentLayer, x: torch.Tensor, out: torch.Tensor, probe: LstmProbe | None = None) -> None:
        if self._inner is not None:
            self._inner.recurrent(index, layer, x, out, probe)
        with torch.no_grad():
            native = KERNEL.ready() if self._native else None
            values = out.detach()  # h_t of every timestep
            counts = native.value_counts([values], *LINEAR_COLUMNS)[0] if native is not None else value_counts(values)
            self._captured[("act_out", f"layers.{index}")] = counts

    # --- after backward ---------------------------------------------------------------------

    def _count_dense(self, native: ModuleType | None) -> None:
        """act_pre and act_out of every dense layer of this step, in one grouped pass."""
        keys: list[tuple[str, str]] = []
        tensors: list[torch.Tensor] = []
        for name, pre, act in self._dense:
            keys += [("act_pre", name), ("act_out", name)]
            tensors += [pre, act]
        self._dense = []
        if native is not None:
            self._captured.update(zip(keys, native.value_counts(tensors, *LINEAR_COLUMNS).unbind(), strict=True))
            return
        tensors = [t.reshape(-1) for t in tensors]
        sizes = tuple(t.numel() for t in tensors)
        offsets = self._dense_offsets.get(sizes)
        if offsets is None:
            offsets = self._dense_offsets[sizes] = element_offsets(list(sizes), tensors[0].device)
        counts = grouped_value_counts(torch.cat(tensors), offsets, len(tensors))
        self._captured.update(zip(keys, counts.unbind(), strict=True))

    def record(self, step: int, grads: list[torch.Tensor]) -> None:
        """Histogram this step's raw gradients `grads` (FlatParameters.grads()) and what the taps caught."""
        self._inner = None
        native = KERNEL.ready() if self._native else None
        with torch.no_grad():
            self._flat.gather(grads)
            if self._dense:
                self._count_dense(native)
            if native is not None:
                columns = self._columns
                gradients = native.log_magnitude_counts(
                    self._flat.grad.view(-1), self._bounds, columns.first_column, columns.next_start, columns.shift, COLUMNS
                )
            else:
                gradients = log_magnitude_counts(self._flat.grad, self._offsets, len(self._names), self._columns)
        keys = [("grad_log10_abs", name) for name in self._names] + list(self._captured)
        if self.keys is None:
            self.keys = tuple(keys)
        elif tuple(keys) != self.keys:
            raise RuntimeError(f"step {step} histogrammed a different set of tensors than the first histogram step")
        self._steps.append(step)
        self._counts.append(torch.cat([gradients, torch.stack(list(self._captured.values()))]) if self._captured else gradients)
        self._captured = {}

    def take(self, last_step: int) -> HistogramBatch | None:
        """Every pending histogram of a step ≤ last_step, (S, K, B + 4) on the host."""
        count = sum(1 for s in self._steps if s <= last_step)
        if not count:
            return None
        counts = torch.stack(self._counts[:count]).cpu().numpy()  # sync: one device→host copy per flush
        counts[:, : len(self._names), ZERO] -= self._padding  # the flat buffer's row padding is zeros
        steps = np.asarray(self._steps[:count], dtype=np.int64)
        self._steps, self._counts = self._steps[count:], self._counts[count:]
        assert self.keys is not None
        edges = {metric: EDGES[metric].copy() for metric, _ in self.keys}
        return HistogramBatch(steps=steps, keys=self.keys, counts=counts, edges=edges)
