"""The training loss: cross-entropy, or the square loss on one-hot targets.

Cohen et al. 2021 ("Gradient Descent on Neural Networks Typically Occurs at the Edge of
Stability", §3 and App. B) train classifiers with the square loss ½‖f(x) − e_y‖², summed over
the classes and averaged over the examples; under it full-batch gradient descent's sharpness
rises to 2/η and hovers there. With cross-entropy the same happens only after a while (their
§3.3), so the square loss is what a study of the edge of stability asks for.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

LOSSES = ("cross_entropy", "mse")


def resolve_loss(requested: str | None, task: str) -> str:
    """The loss a run trains with: the task's own unless the configuration names one."""
    if task == "regression":
        if requested not in (None, "mse"):
            raise ValueError(f"training.loss={requested!r} cannot train a regression task; use 'mse'")
        return "mse"
    if requested is None:
        return "cross_entropy"
    if requested not in LOSSES:
        raise ValueError(f"training.loss={requested!r} is not one of {', '.join(map(repr, LOSSES))}")
    return requested


def compute_loss(output: torch.Tensor, target: torch.Tensor, task: str, loss: str = "cross_entropy") -> torch.Tensor:
    """Mean loss of a batch. `output` (B, C) or (B, T, C) logits, or (B, 1) for regression."""
    if task == "regression":
        return F.mse_loss(output.squeeze(-1), target)
    logits = output.reshape(-1, output.shape[-1])  # (N, C)
    labels = target.reshape(-1)  # (N,)
    if loss == "mse":
        one_hot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        return 0.5 * (logits - one_hot).square().sum(-1).mean()
    return F.cross_entropy(logits, labels)
