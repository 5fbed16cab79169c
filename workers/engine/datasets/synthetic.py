"""Generated long-range tasks, seeded: adding, copy memory and temporal order.

Train and test sets come from two independent streams of one seed, so the held-out
sequences are new ones, and the same seed always gives the same data.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import TaskData


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    train, test = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(train), np.random.default_rng(test)


def adding_sequences(count: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015 form).

    Each step carries a value ~ U(0, 1) and a marker; exactly two steps are marked, one in the
    first half and one in the second; the target is the sum of the two marked values.
    x (N, T, 2), y (N,). A constant prediction of 1 scores MSE = Var(u₁ + u₂) = 1/6 ≈ 0.167.
    """
    if length < 2:
        raise ValueError(f"the adding problem needs sequences of at least 2 steps, got {length}")
    values = rng.random((count, length))
    half = length // 2
    first = rng.integers(0, half, count)
    second = rng.integers(half, length, count)
    markers = np.zeros((count, length))
    rows = np.arange(count)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=2)
    y = values[rows, first] + values[rows, second]
    return x.astype(np.float32), y.astype(np.float32)


COPY_SYMBOLS = 8  # data symbols 1…8; 0 is blank, 9 the delimiter (Arjovsky et al. 2016)
COPY_LENGTH = 10  # symbols to remember


def copy_sequences(count: int, delay: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Copy memory (Arjovsky, Shah & Bengio 2016): read 10 symbols, wait `delay` steps, recall them.

    Input: the 10 symbols, delay − 1 blanks, the delimiter, 10 blanks (T = delay + 20 steps),
    one-hot over 10 categories: x (N, T, 10). Target: blanks, then the 10 symbols: y (N, T) in 0…8.
    A memoryless model scores cross-entropy 10·ln 8 / T.
    """
    length = delay + 2 * COPY_LENGTH
    symbols = rng.integers(1, COPY_SYMBOLS + 1, (count, COPY_LENGTH))
    tokens = np.zeros((count, length), dtype=np.int64)
    tokens[:, :COPY_LENGTH] = symbols
    tokens[:, COPY_LENGTH + delay - 1] = COPY_SYMBOLS + 1
    targets = np.zeros((count, length), dtype=np.int64)
    targets[:, -COPY_LENGTH:] = symbols
    x = np.eye(COPY_SYMBOLS + 2, dtype=np.float32)[tokens]
    return x, targets


def temporal_order_sequences(count: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Temporal order (Hochreiter & Schmidhuber 1997, task 6a; Pascanu et al. 2013).

    Distractor symbols a–d everywhere except two steps, t₁ ∈ [T/10, 2T/10) and t₂ ∈ [5T/10, 6T/10),
    which hold X or Y; the class is the order: XX, XY, YX, YY (0–3). x (N, T, 6) one-hot, y (N,).
    """
    if length < 10:
        raise ValueError(f"the temporal order task needs sequences of at least 10 steps, got {length}")
    tokens = rng.integers(0, 4, (count, length))
    first = rng.integers(length // 10, 2 * length // 10, count)
    second = rng.integers(5 * length // 10, 6 * length // 10, count)
    first_symbol = rng.integers(0, 2, count)
    second_symbol = rng.integers(0, 2, count)
    rows = np.arange(count)
    tokens[rows, first] = 4 + first_symbol
    tokens[rows, second] = 4 + second_symbol
    x = np.eye(6, dtype=np.float32)[tokens]
    return x, (2 * first_symbol + second_symbol).astype(np.int64)


def load(name: str, length: int, num_train: int, num_test: int, seed: int) -> TaskData:
    train_rng, test_rng = _streams(seed)
    generate = {"adding": adding_sequences, "copy": copy_sequences, "temporal_order": temporal_order_sequences}[name]
    train_x, train_y = generate(num_train, length, train_rng)
    test_x, test_y = generate(num_test, length, test_rng)
    regression = name == "adding"
    return TaskData(
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        task="regression" if regression else "classification",
        num_outputs={"adding": 1, "copy": COPY_SYMBOLS + 1, "temporal_order": 4}[name],
        many_to_many=name == "copy",
    )
