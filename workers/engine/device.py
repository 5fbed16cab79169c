"""Which device to train on."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """"cpu", "cuda" or "auto" (cuda when available) → a torch.device; cuda without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu' or 'auto'")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; expected 'cpu', 'cuda' or 'auto'")
    return torch.device(name)
