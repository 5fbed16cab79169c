"""Sequential MNIST: an image read row by row (28 steps of 28) or pixel by pixel (784 steps of 1),
optionally in one fixed random order of the steps (permuted, Le et al. 2015). Splits, limit and
held-out images as for `mnist`."""

from __future__ import annotations

import numpy as np

from . import mnist
from .base import TaskData, classification


def load(
    split: str,
    data_dir: str | None,
    download: bool,
    timeout: float,
    limit: int | None,
    test_size: int | None,
    pixel_order: str,
    permuted: bool,
    seed: int,
    mirrors: tuple[str, ...] = mnist.MIRRORS,
) -> TaskData:
    train_x, train_y, test_x, test_y = mnist.load_images(split, data_dir, download, timeout, limit, test_size, mirrors)
    shape = (28, 28) if pixel_order == "rows" else (784, 1)
    train_x, test_x = train_x.reshape(-1, *shape), test_x.reshape(-1, *shape)
    if permuted:
        order = np.random.default_rng(seed).permutation(shape[0])
        train_x, test_x = train_x[:, order], test_x[:, order]
    return classification(train_x, train_y, test_x, test_y, num_classes=10)
