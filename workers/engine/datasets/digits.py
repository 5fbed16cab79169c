"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, no download).

The last `test_size` images of each class (360 in all by default, a fifth), stratified, are
held out. Pixels (0–16) are scaled to [0, 1]; each image is 8 rows of 8 pixels, (N, 8, 8).

The images are read straight from the CSV file that scikit-learn ships
(`sklearn/datasets/data/digits.csv.gz`: 64 pixels and the label per row), without importing
scikit-learn: that import pulls in SciPy and took 2 s of CPU and up to 20 s on a busy
machine's cold file cache, in the first run of every fresh worker process, so a run resumed on
a new worker stalled that long before its first step.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .base import TaskData, classification, split_classification

DEFAULT_TEST_SIZE = 360


def digits_file() -> Path:
    """The CSV inside the installed scikit-learn package, found without running its code."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the digits dataset ships with scikit-learn, which is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


def load(limit: int | None, test_size: int | None) -> TaskData:
    table = np.loadtxt(digits_file(), delimiter=",")  # (1797, 65): pixels 0–16, then the label
    x = (table[:, :-1].reshape(-1, 8, 8) / 16.0).astype(np.float32)  # (1797, 8, 8)
    y = table[:, -1].astype(np.int64)
    return classification(*split_classification(x, y, test_size or DEFAULT_TEST_SIZE, limit), num_classes=10)
