"""The training engine: pure PyTorch, configured by dataclasses, records handed to a callback."""

from .config import (
    ClippingConfig,
    DatasetConfig,
    InitConfig,
    ModelConfig,
    ProbeConfig,
    RunConfig,
    TrainingConfig,
)
from .datasets import DatasetUnavailable
from .records import ProbeBatch, RunResult, TimestepBatch
from .trainer import train

__all__ = [
    "ClippingConfig",
    "DatasetConfig",
    "DatasetUnavailable",
    "InitConfig",
    "ModelConfig",
    "ProbeBatch",
    "ProbeConfig",
    "RunConfig",
    "RunResult",
    "TimestepBatch",
    "TrainingConfig",
    "train",
]
