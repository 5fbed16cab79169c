"""gradwatch's own LSTM layer on the CPU, with the probes inside its forward and backward.

nn.LSTM's fused kernel hides h_t, c_t and the gates, so the probes would recompute them after
backward (through_time.py): one GEMM over the sequence for the gates and a second backward
recursion for ‖∂L/∂h_t‖ — the largest part of a recorded LSTM step's probe cost. The C++ layer in
lstm_kernel.cpp runs the same equations as one call forward and one call backward (one GEMM and
one vectorised element-wise pass a timestep), and takes the gate statistics and the through-time
norms as it goes. It serves float32 LSTMs on a CPU with AVX2/FMA and H a multiple of 8 when the
probe loops are built (row_statistics.native_module); everything else runs PyTorch's kernel.

Its backward is not differentiable again: the curvature probe's Hessian-vector products run
the model with the layer switched off (`RecurrentNet.plain_kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch.autograd.function import once_differentiable


@dataclass
class LstmProbe:
    """What the probes ask of one layer's kernel call on one step, and what it hands back.

    `inverse_bounds` (4H,): 1/saturation bound per gate column, or None for no gate statistics.
    After forward, `statistics` (10H + 2,) float64: Σ of each activated gate column (4H), the
    count of |a| beyond its bound per column (4H), Σh and Σh² over the output sequence.
    After backward, `norms` (2, T) float32: ‖∂L/∂h_t‖ and ‖∂L/∂c_t‖ at every timestep."""

    inverse_bounds: torch.Tensor | None
    taken: bool = False  # set by the kernel: False where the layer ran PyTorch's LSTM instead
    elements: int = 0  # T·B·H: the elements behind each gate block's sums and behind Σh, Σh²
    statistics: torch.Tensor | None = None
    norms: torch.Tensor | None = None


def serves(native: ModuleType | None, hidden_size: int, x: torch.Tensor) -> bool:
    """Whether the C++ layer can run this LSTM call."""
    return native is not None and hidden_size % 8 == 0 and x.device.type == "cpu" and x.dtype == torch.float32


_NO_STATISTICS = torch.empty(0)


class _Lstm(torch.autograd.Function):
    """Time-major x (T, B, D), h0 and c0 (B, H) and the four weights → hidden (T, B, H), c_T (B, H)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        h0: torch.Tensor,
        c0: torch.Tensor,
        weight_ih: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_ih: torch.Tensor,
        bias_hh: torch.Tensor,
        native: ModuleType,
        probe: LstmProbe | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bounds = probe.inverse_bounds if probe is not None and probe.inverse_bounds is not None else _NO_STATISTICS
        hidden, cell, squashed, gates, statistics = native.lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih + bias_hh, bounds)
        if probe is not None:
            probe.taken = True
            probe.elements = hidden.numel()
            probe.statistics = statistics if statistics.numel() else None
        ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh, hidden, cell, squashed, gates)
        ctx.native, ctx.probe, ctx.spent = native, probe, False
        # c_T copied: an output that is a view of a saved tensor would tie the two together.
        return hidden, cell[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_hidden: torch.Tensor, grad_cell: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.spent:  # the gates were overwritten by ∂L/∂a in the first backward
            raise RuntimeError("gradwatch's LSTM layer runs backward once per forward (retain_graph is not supported)")
        ctx.spent = True
        x, h0, c0, weight_ih, weight_hh, hidden, cell, squashed, gates = ctx.saved_tensors
        grad_x, grad_h0, grad_c0, grad_ih, grad_hh, grad_bias, norms = ctx.native.lstm_backward(
            grad_hidden.contiguous(), grad_cell.contiguous(), x, h0, c0, weight_ih, weight_hh, hidden, cell, squashed, gates,
            ctx.needs_input_grad[0],
        )
        if ctx.probe is not None:
            ctx.probe.norms = norms
        return grad_x, grad_h0, grad_c0, grad_ih, grad_hh, grad_bias, grad_bias, None, None


def lstm(
    x: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor],
    weights: list[torch.Tensor],
    native: ModuleType,
    probe: LstmProbe | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """nn.LSTM's one-layer, batch-first call: x (B, T, D), state (h0, c0) (1, B, H) each → output
    (B, T, H) and (h_T, c_T) (1, B, H) each, run by the C++ layer."""
    h0, c0 = state
    # Time-major inside: a layer above gets its input already time-major, so this copy is free.
    hidden, cell_last = _Lstm.apply(x.transpose(0, 1).contiguous(), h0[0], c0[0], *weights, native, probe)
    return hidden.transpose(0, 1), (hidden[-1:], cell_last.unsqueeze(0))
