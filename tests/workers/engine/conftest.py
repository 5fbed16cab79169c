"""Engine tests run single-threaded: their kernels are small, so a second thread buys little and
costs a lot on a shared 2-core runner; and the bit-identity tests need a fixed thread count."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
