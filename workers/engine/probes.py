"""Gradient and weight probes, computed on the device (the layer and through-time probes are
layer_taps.py's ForwardTaps, re-exported here).

Nothing here reads a device value: every statistic is written into the Recorder's buffers or
handed to it as a device tensor, and copied to the host once per flush. What can be derived
on the host from what was measured (mean |g| = Σ|g|/n, std from Σg and Σg², ‖Δw‖/‖w‖, the
per-tensor figures from per-row partial sums) is derived there, in float64, so that the
training step runs as few kernels as possible: each costs a dispatch (a few µs on a CPU) and
a pass over the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .layer_taps import ForwardTaps, timestep_indices
from .row_statistics import STATISTICS, RowStatistics

__all__ = ["DerivedUpdate", "FlatParameters", "ForwardTaps", "ParameterProbe", "parameter_order", "timestep_indices"]

class FlatParameters:
    """Every parameter as a view into one (R, C) weight buffer, and a flat copy of the
    gradients in the same layout where a probe reads them so.

    Parameter i occupies rows [start_i, start_i + k_i), k_i = ⌈n_i / C⌉, zero-padded to a whole
    row, so a statistic of every tensor is one kernel over the buffer along dim 1 (→ (R,)) and
    a sum over each tensor's rows on the host, instead of one kernel per tensor. (PyTorch's
    segment_reduce / index_add_ would avoid the padding, but on a CPU they are 10-30× slower
    than a plain row reduction.) The padding is never touched by the optimiser (it sees only
    the views), so it stays zero and adds nothing to sums, norms or maxima.

    The gradients are not views of a buffer: `clear_grads()` sets them to None before backward,
    so autograd hands each parameter the tensor its backward computed. Views would have to be
    zeroed and then accumulated into, two passes over every gradient each step (136 µs of the
    1.36 ms step of bench/probe_overhead.py's MLP). The C++ row statistics read the gradients
    where they are (row_statistics.py); the plain and compiled paths and the histograms read the
    (3, R, C) `grad_block` that `gather()` copies them into: the gradient, then scratch rows for
    |g| and the finite flags, so that Σg, Σ|g| and the finite count are one reduction over it.
    """

    def __init__(self, params: list[torch.nn.Parameter], scratch: bool) -> None:
        self.params = params
        sizes = [p.numel() for p in params]
        self.width = _row_width(sizes)
        rows = [max(1, math.ceil(n / self.width)) for n in sizes]
        self.row_starts = np.cumsum([0, *rows[:-1]]).astype(np.int64)  # for np.add.reduceat
        self.numel = np.array(sizes, dtype=np.float64)
        self.padded = np.array(rows, dtype=np.float64) * self.width  # elements incl. padding
        count, reference = sum(rows), params[0]
        self.rows = count
        self._scratch = scratch
        self._block: torch.Tensor | None = None  # made at the first gather()
        self._views: list[torch.Tensor] = []  # each parameter's gradient inside the block
        self.weight = torch.zeros(count, self.width, device=reference.device, dtype=reference.dtype)  # (R, C)
        flat_weight = self.weight.view(-1)
        with torch.no_grad():
            for p, start, n in zip(params, self.row_starts, sizes):
                offset = int(start) * self.width
                flat_weight[offset : offset + n].copy_(p.detach().reshape(-1))
                p.data = flat_weight[offset : offset + n].view(p.shape)
                p.grad = None

    def clear_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def grads(self) -> list[torch.Tensor]:
        """The gradients after backward, in parameter order. A parameter that nothing flowed back
        to gets zeros, so that the optimiser (weight decay, momentum) treats it as every step."""
        grads = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        return grads

    @property
    def grad_block(self) -> torch.Tensor:
        if self._block is None:
            self._block = self.weight.new_zeros(3 if self._scratch else 1, self.rows, self.width)
            flat = self._block[0].view(-1)
            self._views = [flat[int(start) * self.width : int(start) * self.width + p.numel()].view(p.shape) for p, start in zip(self.params, self.row_starts)]
        return self._block

    @property
    def grad(self) -> torch.Tensor:
        """The (R, C) gradient of the last gather()."""
        return self.grad_block[0]

    def gather(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Copy `grads` into the block's gradient rows (their padding stays zero); the block."""
        block = self.grad_block
        torch._foreach_copy_(self._views, grads)
        return block


def _row_width(sizes: list[int]) -> int:
    """The widest row (≤ 1024, ≥ 32) that wastes at most 1/8 of the buffer on padding."""
    total = sum(sizes)
    width = 1024
    while width > 32 and sum(math.ceil(n / width) * width for n in sizes) > total * 1.125:
        width //= 2
    return width


@dataclass(frozen=True)
class DerivedUpdate:
    """Plain SGD's step is w ← w − lr (s g + λ w), with s the clipping factor min(1, τ/‖g‖)
    (Pascanu et al. 2013, Alg. 1; 1 without clipping) and λ the weight decay. So per row
    ‖Δw‖² = lr² (s² ‖g‖² + 2 s λ ⟨g, w⟩ + λ² ‖w‖²), from statistics the fused pass already has:
    no copy of the weights before the step and no pass over them after it."""

    weight_decay: float
    max_norm: float | None  # norm clipping's τ, or None without clipping


class ParameterProbe:
    """Per parameter tensor: ‖g‖, mean |g|, std g, max |g|, #NaN/Inf, ‖w‖ and ‖Δw‖/‖w‖.

    `gradients()` runs after backward and before clipping and the step, so the gradient
    statistics describe ∂L/∂θ itself and ‖w‖ the weights the step starts from: one pass over
    both buffers (row_statistics.py). ‖Δw‖ is derived on the host for plain SGD (`derived`);
    for every other optimiser `before_update()` / `after_update()` bracket the step and measure
    it. Each writes per-row partial results with `out=` into the views of one Recorder row (see
    `views()`): no allocation in the step. `finish()` turns them into per-tensor figures.
    """

    def __init__(
        self, names: list[str], flat: FlatParameters, derived: DerivedUpdate | None = None, fused: bool = False, native: bool = True
    ) -> None:
        self.names = tuple(names)
        self.flat = flat
        self.derived = derived
        rows = flat.rows
        # Row layout: the 7 row statistics (‖g‖ | Σg, Σ|g|, #finite | max |g| | ‖w‖ | ⟨g, w⟩), then ‖Δw‖.
        self.width = (STATISTICS + 1) * rows
        self._product = derived is not None and derived.weight_decay != 0.0
        self._statistics = RowStatistics(flat, fused, native)
        if derived is None:
            self._weights = torch.zeros(2, rows, flat.width, dtype=flat.weight.dtype, device=flat.weight.device)

    @property
    def compiled(self) -> bool:
        """Whether the statistics now come from the compiled kernel (else the plain path)."""
        return self._statistics.compiled

    def views(self, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where one recorded step's raw columns go, inside `row` (a view of the Recorder's buffer):
        the (7, R) row statistics and the (R,) measured ‖Δw‖."""
        rows = self.flat.rows
        return row[: STATISTICS * rows].view(STATISTICS, rows), row[STATISTICS * rows : self.width]

    def gradients(self, views: tuple[torch.Tensor, torch.Tensor], grads: list[torch.Tensor]) -> None:
        """The row statistics of this step's raw gradients `grads` (FlatParameters.grads())."""
        self._statistics(views[0], grads, self._product)

    def before_update(self) -> None:
        if self.derived is None:
            self._weights[0].copy_(self.flat.weight)

    def after_update(self, views: tuple[torch.Tensor, torch.Tensor]) -> None:
        if self.derived is None:
            torch.sub(self._weights[0], self.flat.weight, out=self._weights[1])  # w_before − w_after
            torch.linalg.vector_norm(self._weights[1], dim=1, out=views[1])

    def finish(self, raw: np.ndarray, lr: np.ndarray | None = None, total_norm: np.ndarray | None = None) -> dict[tuple[str, str], np.ndarray]:
        """Per-tensor metrics from the raw columns of S steps, (S, width) → {(metric, name): (S,)}, float64.
        `lr` and `total_norm` (‖g‖ over all parameters before clipping), (S,) each, serve the derived ‖Δw‖."""
        rows, flat = self.flat.rows, self.flat
        starts = flat.row_starts

        def column(index: int) -> np.ndarray:
            return raw[:, index * rows : (index + 1) * rows]

        def per_tensor(block: np.ndarray) -> np.ndarray:  # (S, R) → (S, P): sum over each tensor's rows
            return np.add.reduceat(block, starts, axis=1)

        grad_square = per_tensor(column(0) ** 2)
        grad_norm = np.sqrt(grad_square)
        total = per_tensor(column(1))
        sum_abs = per_tensor(column(2))
        nonfinite = flat.padded - per_tensor(column(3))  # padding counts as finite
        max_abs = np.maximum.reduceat(column(4), starts, axis=1)  # NaN propagates
        weight_square = per_tensor(column(5) ** 2)
        weight_norm = np.sqrt(weight_square)
        count = flat.numel
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.derived is None:
                update_norm = np.sqrt(per_tensor(column(7) ** 2))
            else:
                update_norm = self._derived_update(grad_square, per_tensor(column(6)), weight_square, lr, total_norm)
            mean = total / count
            # Population std from Σg and Σg² = ‖g‖²: accurate unless |mean| ≫ std (float32 inputs).
            std = np.sqrt(np.maximum(grad_square / count - mean * mean, 0.0))  # NaN passes
            metrics = {
                "grad_norm": grad_norm,
                "grad_mean_abs": sum_abs / count,
                "grad_std": std,
                "grad_max_abs": max_abs,
                "grad_nonfinite": nonfinite,
                "weight_norm": weight_norm,
                "update_ratio": update_norm / weight_norm,
            }
        return {(metric, name): table[:, i] for metric, table in metrics.items() for i, name in enumerate(self.names)}

    def _derived_update(self, grad_square: np.ndarray, product: np.ndarray, weight_square: np.ndarray, lr: np.ndarray | None, total_norm: np.ndarray | None) -> np.ndarray:
        """‖Δw‖ per tensor of plain SGD, (S, P); see DerivedUpdate."""
        derived = self.derived
        assert derived is not None and lr is not None
        scale = np.ones_like(lr)
        if derived.max_norm is not None:
            assert total_norm is not None
            scale = np.minimum(1.0, derived.max_norm / total_norm)  # inf (‖g‖ = 0) → 1, as on the device
        s, decay = scale[:, None], derived.weight_decay
        square = s * s * grad_square + (2.0 * s * decay * product if decay else 0.0) + decay * decay * weight_square
        return lr[:, None] * np.sqrt(np.maximum(square, 0.0))  # NaN passes


def parameter_order(model: torch.nn.Module) -> list[str]:
    """Layer names and parameter names interleaved input → output: layers.0, layers.0.weight, …, head.bias."""
    order: list[str] = []
    for layer in model.layer_names():  # type: ignore[operator]
        order.append(layer)
        module = model.get_submodule(layer)
        order.extend(f"{layer}.{name}" for name, _ in module.named_parameters())
    return order
