"""The activation functions, and where each one saturates or dies.

Saturation and death are judged on the pre-activation s (one comparison, no extra pass
over the activation): a σ/tanh/softsign unit is saturated when f'(s) has fallen below
`threshold` × max f'; a rectifying unit is dead on a batch when s ≤ 0 for every example
(ReLU outputs zero there, and passes no gradient back).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

Activation = Callable[[torch.Tensor], torch.Tensor]

SATURATING = frozenset({"sigmoid", "tanh", "softsign"})
RECTIFYING = frozenset({"relu", "leaky_relu", "elu", "gelu"})


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def activation_function(name: str, negative_slope: float = 0.01) -> Activation:
    """The element-wise function called `name` (functional: cheaper per call than a Module)."""
    functions: dict[str, Activation] = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky_relu": functools.partial(F.leaky_relu, negative_slope=negative_slope),
        "elu": F.elu,
        "gelu": F.gelu,
        "softsign": F.softsign,
        "identity": _identity,
    }
    if name not in functions:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(functions)}")
    return functions[name]


def saturation_bound(name: str, threshold: float) -> float | None:
    """|s| beyond which f'(s) < threshold · max f', or None when `name` does not saturate.

    tanh: f' = 1 − tanh²(s), so |tanh s| > √(1 − threshold).
    sigmoid: σ(s) = (1 + tanh(s/2)) / 2 and f' = σ(1 − σ) = (1 − tanh²(s/2)) / 4: twice tanh's bound.
    softsign: f' = 1 / (1 + |s|)², so (1 + |s|)² > 1 / threshold.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"saturation threshold must lie in (0, 1), got {threshold}")
    tanh_bound = math.atanh(math.sqrt(1.0 - threshold))
    bounds = {
        "tanh": tanh_bound,
        "sigmoid": 2.0 * tanh_bound,
        "softsign": 1.0 / math.sqrt(threshold) - 1.0,
    }
    return bounds.get(name)


def kaiming_nonlinearity(name: str) -> str:
    """The `nonlinearity` argument of nn.init.kaiming_* that matches an activation."""
    return {
        "relu": "relu",
        "leaky_relu": "leaky_relu",
        "elu": "relu",
        "gelu": "relu",
        "tanh": "tanh",
        "sigmoid": "sigmoid",
    }.get(name, "linear")
