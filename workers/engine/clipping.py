"""Gradient clipping, on the device and without synchronising with the host.

`norm` is Pascanu, Mikolov & Bengio 2013, Algorithm 1: if ‖g‖ ≥ threshold, g ← threshold/‖g‖ · g,
with ‖g‖ the L2 norm over all parameters together. The branch is taken on the device as a
multiplication by min(1, threshold/‖g‖), so below the threshold g is multiplied by exactly 1.0
(bit-identical) and no `if` ever reads a device value on the host.
"""

from __future__ import annotations

import torch


def total_norm(norms: list[torch.Tensor]) -> torch.Tensor:
    """‖g‖ over all tensors from their per-tensor L2 norms: √(Σ‖g_i‖²). A 0-d device tensor."""
    return torch.linalg.vector_norm(torch.stack(norms))


def grad_norms(grads: list[torch.Tensor], order: float = 2.0) -> list[torch.Tensor]:
    """Per-tensor L2 norms (max |g| with `order` ∞), one kernel per tensor on CPU and one in all on CUDA."""
    return list(torch._foreach_norm(grads, order))


def clip_by_norm_(grads: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """Scale `grads` in place so that their global norm is at most `max_norm` (Alg. 1).

    `norm` is their global norm before clipping (already computed for the probes). A zero
    norm gives an infinite ratio, clamped to 1; a non-finite norm leaves non-finite gradients.
    """
    scale = torch.clamp(max_norm / norm, max=1.0)
    torch._foreach_mul_(grads, scale)


def clip_by_value_(grads: list[torch.Tensor], max_value: float) -> None:
    """Clamp every gradient element to [−max_value, max_value] in place."""
    torch._foreach_clamp_min_(grads, -max_value)
    torch._foreach_clamp_max_(grads, max_value)


def clip_(grads: list[torch.Tensor], mode: str, max_norm: float, max_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip in place by `mode`; return the global norm before and after, as 0-d device tensors."""
    before = total_norm(grad_norms(grads))
    if mode == "none":
        return before, before
    if mode == "norm":
        clip_by_norm_(grads, max_norm, before)
    elif mode == "value":
        clip_by_value_(grads, max_value)
    else:
        raise ValueError(f"unknown clipping mode {mode!r}")
    return before, total_norm(grad_norms(grads))  # measured again, not derived: what the optimiser sees
