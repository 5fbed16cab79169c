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

All gradient tensors are one pass over the flat gradient buffer: bucketize, then one bincount
over (tensor, column) pairs; the zero padding of the buffer's rows is subtracted on the host.
Activations are one bincount per captured tensor. Nothing is read on the host in the step;
`take()` copies every pending histogram to the host at once.

MLP layers give `act_pre` (s = Wx + b) and `act_out` (f(s)); recurrent layers run fused
kernels that keep s inside, so they give `act_out` (h_t over every timestep) only.
"""

from __future__ import annotations

import numpy as np
import torch

from .activations import activation_function
from .models import MLP, RecurrentLayer
from .probes import FlatParameters
from .records import HistogramBatch

BINS = 128
GRADIENT_EDGES = np.linspace(-12.0, 4.0, BINS + 1)  # log10|g|: eight bins a decade
ACTIVATION_EDGES = np.linspace(-8.0, 8.0, BINS + 1)  # s or f(s): 1/8 wide
COLUMNS = BINS + 4
ZERO, BELOW, ABOVE, NONFINITE = 0, 1, BINS + 2, BINS + 3
EDGES = {"grad_log10_abs": GRADIENT_EDGES, "act_pre": ACTIVATION_EDGES, "act_out": ACTIVATION_EDGES}


def bin_counts(values: torch.Tensor, groups: torch.Tensor | None, group_count: int, edges: torch.Tensor, log_magnitude: bool) -> torch.Tensor:
    """(group_count, B + 4) int64 counts of `values` by group (int64, same shape) and column."""
    # log10 0 = −inf: the zero column below. Contiguous, else searchsorted copies it anyway
    # (a fused RNN kernel's batch-first output is a transposed view).
    scale = torch.log10(values.abs()) if log_magnitude else values.contiguous()
    column = torch.bucketize(scale, edges, right=True).add_(1)  # 1: below, 2 … B+1: bins, B+2: above
    column = torch.where(values == 0, ZERO, column)
    column = torch.where(torch.isfinite(values), column, NONFINITE)
    if groups is not None:
        column = column.add_(groups * COLUMNS)
    return torch.bincount(column.reshape(-1), minlength=group_count * COLUMNS).view(group_count, COLUMNS)


class HistogramProbe:
    """Collects the histograms of the recorded steps it is asked to, and hands them out by flush.

    Per histogram step: `watch(model)` before the forward pass (forward hooks, removed by
    `record`), `record(step)` after backward and before clipping, so the gradient histograms
    describe ∂L/∂θ itself.
    """

    def __init__(self, names: list[str], flat: FlatParameters, activation: str, negative_slope: float) -> None:
        self._names = list(names)
        self._flat = flat
        self._activation = activation_function(activation, negative_slope)
        device = flat.grad.device
        rows = np.diff(np.append(flat.row_starts, flat.rows))  # rows of each tensor
        self._row_groups = torch.repeat_interleave(torch.arange(len(names), device=device), torch.as_tensor(rows, device=device))
        self._row_groups = self._row_groups[:, None].expand(-1, flat.width)  # (R, C): tensor of each element
        self._padding = (flat.padded - flat.numel).astype(np.int64)  # zeros of each tensor's padding
        self._gradient_edges = torch.as_tensor(GRADIENT_EDGES, dtype=flat.grad.dtype, device=device)
        self._activation_edges = torch.as_tensor(ACTIVATION_EDGES, dtype=flat.grad.dtype, device=device)
        self._hooks: list = []
        self._captured: dict[tuple[str, str], torch.Tensor] = {}
        self.keys: tuple[tuple[str, str], ...] | None = None  # fixed by the first histogram step
        self._steps: list[int] = []
        self._counts: list[torch.Tensor] = []  # (K, B + 4) int64 per histogram step

    def watch(self, model: torch.nn.Module) -> None:
        for name, module in model.named_modules():
            if isinstance(module, RecurrentLayer):
                self._hooks.append(module.register_forward_hook(self._recurrent_hook(name)))
            elif isinstance(model, MLP) and name.startswith("layers."):
                self._hooks.append(module.register_forward_hook(self._dense_hook(name)))

    def _dense_hook(self, name: str):
        def hook(module, inputs, pre):  # pre: (B, H), the Linear's output s
            with torch.no_grad():
                self._add(("act_pre", name), self._count_values(pre))
                self._add(("act_out", name), self._count_values(self._activation(pre)))

        return hook

    def _recurrent_hook(self, name: str):
        def hook(module, inputs, result):  # result: (out (B, t, H) of one piece, state)
            with torch.no_grad():
                self._add(("act_out", name), self._count_values(result[0]))

        return hook

    def _count_values(self, values: torch.Tensor) -> torch.Tensor:
        return bin_counts(values.detach(), None, 1, self._activation_edges, log_magnitude=False)[0]

    def _add(self, key: tuple[str, str], counts: torch.Tensor) -> None:
        # A recurrent layer cut into pieces reports once per piece: its counts add up.
        previous = self._captured.get(key)
        self._captured[key] = counts if previous is None else previous + counts

    def record(self, step: int) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        gradients = bin_counts(self._flat.grad, self._row_groups, len(self._names), self._gradient_edges, log_magnitude=True)
        keys = [("grad_log10_abs", name) for name in self._names] + list(self._captured)
        if self.keys is None:
            self.keys = tuple(keys)
        elif tuple(keys) != self.keys:
            raise RuntimeError(f"step {step} histogrammed a different set of tensors than the first histogram step")
        self._steps.append(step)
        self._counts.append(torch.cat([gradients, *(c[None] for c in self._captured.values())]))
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
