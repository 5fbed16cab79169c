"""Optimisers and learning-rate schedules.

The schedule is a plain function of the step, evaluated on the host and written into the
optimiser's param groups before each step: no scheduler object, no device value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .config import TrainingConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    """The optimiser named by `config.optimizer`, with the multi-tensor (foreach) implementation."""
    params = list(params)
    name = config.optimizer
    if name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    if name == "momentum":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            foreach=True,
        )
    if name == "adam":
        return torch.optim.Adam(
            params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay, foreach=True
        )
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay, foreach=True
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=config.lr, alpha=config.alpha, eps=config.eps, weight_decay=config.weight_decay, foreach=True
        )
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, momentum, adam, adamw or rmsprop")


def learning_rate(config: TrainingConfig, step: int) -> float:
    """The learning rate at `step` (0-based) of `config.steps`."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        return config.lr * config.gamma ** (step // config.step_size)
    if config.schedule == "cosine":
        progress = step / max(config.steps - 1, 1)  # 0 at the first step, 1 at the last
        return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {config.schedule!r}; expected constant, step or cosine")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
