"""The worker's out-of-memory guard in this very process: under the cap, torch's and
numpy's allocations beyond it fail with errors the guard recognises, and the limit is
restored afterwards. Through a real Celery worker: tests/e2e/test_budgets.py."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest
import torch

from workers.memory_guard import address_space_cap, is_out_of_memory, out_of_memory_message

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc/self/statm: Linux")

ALLOWANCE = 256 * 2**20


def test_allocations_beyond_the_cap_fail_recognisably_and_the_limit_is_restored() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    errors: list[BaseException] = []
    with address_space_cap(ALLOWANCE) as allowance:
        assert allowance == ALLOWANCE
        assert resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY
        small = torch.ones(1_000_000)  # well within the allowance
        for allocate in (lambda: torch.empty(2**31, dtype=torch.uint8), lambda: np.ones(2**31, dtype=np.uint8)):
            try:
                allocate()
            except Exception as error:  # noqa: BLE001 - which one is the point of the test
                errors.append(error)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert float(small.sum()) == 1_000_000
    assert len(errors) == 2 and all(is_out_of_memory(error) for error in errors), errors
    assert torch.empty(2**31, dtype=torch.uint8).numel() == 2**31  # free again outside the cap


def test_other_errors_are_not_taken_for_memory() -> None:
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocator error types
    wrapped = RuntimeError("storing failed")
    wrapped.__cause__ = MemoryError()
    assert is_out_of_memory(wrapped)


def test_the_message_names_the_estimate_and_the_cap() -> None:
    from service.budgets import estimate_spec_memory, format_bytes
    from service.schemas.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate({"model": {"type": "mlp"}, "dataset": {"name": "digits"}}).model_dump(mode="json")
    message = out_of_memory_message(MemoryError("Unable to allocate 8 GiB"), spec, 2**30)
    assert message.startswith("out of memory: ")
    assert f"its estimate was {format_bytes(estimate_spec_memory(spec).total)};" in message
    assert "lets a run add 1.0 GiB of address space" in message and "(Unable to allocate 8 GiB)" in message
