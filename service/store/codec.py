"""Arrays to and from the little-endian bytes stored in chunk rows."""

from __future__ import annotations

import numpy as np

STEP_DTYPE = np.dtype("<i8")
VALUE_DTYPE = np.dtype("<f8")


def encode_steps(steps: np.ndarray) -> bytes:
    return np.ascontiguousarray(steps, dtype=STEP_DTYPE).tobytes()


def encode_values(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype=VALUE_DTYPE).tobytes()


def decode_steps(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=STEP_DTYPE)


def decode_values(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=VALUE_DTYPE)
