"""MNIST-1D (Greydanus 2020), generated offline by the `mnist1d` package.

Only `make_dataset(get_dataset_args())` is used (its `get_dataset` may download): the canonical
arguments, 4,000 training and 1,000 test sequences of 40 values, seeded by the package (42),
so every run sees the dataset of the paper. Each example is a sequence of 40 steps of 1 value.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from .base import TaskData, classification, limit_classification


@functools.lru_cache(maxsize=1)
def _generate() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset  # lazily: only this loader needs mnist1d

    # make_dataset seeds numpy's and random's global generators; leave them as they were.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    as_x = lambda a: np.asarray(a, dtype=np.float32)[:, :, None]  # noqa: E731 (N, 40, 1)
    as_y = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731
    return as_x(data["x"]), as_y(data["y"]), as_x(data["x_test"]), as_y(data["y_test"])


def load(limit: int | None) -> TaskData:
    train_x, train_y, test_x, test_y = _generate()
    train_x, train_y = limit_classification(train_x, train_y, limit)
    return classification(train_x, train_y, test_x, test_y, num_classes=10)
