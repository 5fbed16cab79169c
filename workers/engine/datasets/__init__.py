"""Datasets as tensors: `load_dataset(config)` gives a TaskData on the CPU."""

from __future__ import annotations

from ..config import DatasetConfig
from . import digits, mnist, mnist1d, sequential_mnist, synthetic
from .base import DatasetUnavailable, TaskData

__all__ = ["DatasetUnavailable", "TaskData", "load_dataset"]


def load_dataset(config: DatasetConfig) -> TaskData:
    name = config.name
    if name == "mnist":
        return mnist.load(
            config.split, config.data_dir, config.download, config.download_timeout_s, config.limit, config.test_size,
            config.download_mirrors or mnist.MIRRORS,
        )
    if name == "sequential_mnist":
        return sequential_mnist.load(
            config.split,
            config.data_dir,
            config.download,
            config.download_timeout_s,
            config.limit,
            config.test_size,
            config.pixel_order,
            config.permuted,
            config.seed,
            config.download_mirrors or mnist.MIRRORS,
        )
    if name == "digits":
        return digits.load(config.limit, config.test_size)
    if name == "mnist1d":
        return mnist1d.load(config.limit)
    if name in ("adding", "copy", "temporal_order"):
        return synthetic.load(name, config.seq_len, config.num_train, config.num_test, config.seed)
    raise ValueError(f"unknown dataset {name!r}")
