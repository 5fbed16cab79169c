"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, no download).

The last `test_size` images of each class (360 in all by default, a fifth), stratified, are
held out. Pixels (0–16) are scaled to [0, 1]; each image is 8 rows of 8 pixels, (N, 8, 8).
"""

from __future__ import annotations

import numpy as np

from .base import TaskData, classification, split_classification

DEFAULT_TEST_SIZE = 360


def load(limit: int | None, test_size: int | None) -> TaskData:
    from sklearn.datasets import load_digits  # lazily: only this loader needs scikit-learn

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)  # (1797, 8, 8)
    y = bunch.target.astype(np.int64)
    return classification(*split_classification(x, y, test_size or DEFAULT_TEST_SIZE, limit), num_classes=10)
