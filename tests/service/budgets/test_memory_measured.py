"""The memory estimate against the peak a real run reaches, and its parts by hand.

Each measured spec trains in a forked child of the test process (bench/memory_estimate.py,
which also prints the full table): the growth of its peak resident set size over the
baseline after imports is the measured peak. The estimate must be an upper bound and at
most 3 × the measurement for runs large enough to matter (hundreds of MiB); below that the
framework's fixed working memory (FIXED_OVERHEAD) dominates both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.memory_estimate import adding, measured_peak, mlp, validated
from service.budgets import estimate_spec_memory, run_shape
from service.budgets.memory import FIXED_OVERHEAD, estimate_memory
from service.budgets.parameters import flat_buffer_rows, parameter_sizes
from service.config import Settings

# Narrow layers over long sequences and large batches: hundreds of MiB of activations for
# little arithmetic (memory grows with batch × T × H, time with batch × T × H²).
MEASURED = {
    # 4 × 2048 with Adam: ~14M parameters, ~0.5 GB of parameter-sized tensors, well above
    # the 300 MiB floor however much freed heap the forked child inherits (4 × 1024
    # measured 241 MiB in one CI run and 360 MiB in another).
    "mlp 4×2048 adam": mlp([2048] * 4, 256),
    "rnn 64, T 400": adding("rnn", 64, 400, 512, 2048),
    "lstm 32, T 400": adding("lstm", 32, 400, 512, 2048),
    "gru 32, T 400": adding("gru", 32, 400, 512, 2048),
}
FACTOR = 3.0


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB and fork: Linux")
@pytest.mark.parametrize("name", sorted(MEASURED))
def test_the_estimate_bounds_the_measured_peak(name: str, mnist_data_dir: Path) -> None:
    spec = validated(MEASURED[name])
    measured = measured_peak(spec, Settings(data_dir=mnist_data_dir, allow_download=False))
    estimate = estimate_spec_memory(spec).total
    print(f"{name}: measured {measured / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB")
    assert measured > 300 * 2**20, "too small to say anything about the estimate"
    assert measured <= estimate <= FACTOR * measured


def test_adam_keeps_two_moments_and_one_temporary_per_parameter() -> None:
    spec = {"model": {"type": "mlp", "hidden_sizes": [100]}, "dataset": {"name": "digits"}}
    sgd = estimate_memory(run_shape(validated(spec)))
    adam = estimate_memory(run_shape(validated(spec | {"training": {"optimizer": "adam"}})))
    count = sum(parameter_sizes(run_shape(validated(spec))))
    assert sgd.optimizer == 0 and adam.optimizer == 3 * count * 4
    rows, width = flat_buffer_rows(parameter_sizes(run_shape(validated(spec))))
    assert sgd.parameters == 7 * rows * width * 4  # weights, gradients, their flat copy (3), probe copies (2)


def test_activations_grow_with_batch_sequence_width_and_layers() -> None:
    base = adding("lstm", 64, 50, 64, 1024)

    def activations(**changes: int) -> int:
        spec = adding("lstm", changes.get("hidden", 64), changes.get("seq_len", 50), changes.get("batch", 64), 1024)
        spec["model"]["num_layers"] = changes.get("layers", 1)
        return estimate_memory(run_shape(validated(spec))).activations

    assert validated(base)  # the base spec itself is valid
    single = activations()
    # The training step dominates at batch 512 (the evaluation's 1,000 examples otherwise).
    assert activations(batch=1024) == pytest.approx(2 * activations(batch=512), rel=0.01)
    assert activations(batch=512, layers=2) == pytest.approx(2 * activations(batch=512), rel=0.01)
    assert activations(seq_len=100) == pytest.approx(2 * single, rel=0.01)
    assert activations(hidden=128) == pytest.approx(2 * single, rel=0.01)


def test_the_generated_tasks_count_their_float64_temporaries_while_loading() -> None:
    # One 7.5 GiB array for the RNN (limit 100,000 × seq_len 10,000, two features):
    # drawn in float64 with its markers and stacked first, 40 bytes per position.
    spec = {"model": {"type": "rnn"}, "dataset": {"name": "adding", "seq_len": 10_000, "limit": 100_000}}
    estimate = estimate_memory(run_shape(validated(spec, budgets=False)))
    positions = (100_000 + 1_000) * 10_000
    assert estimate.loading >= 40 * positions
    assert estimate.total >= estimate.loading + FIXED_OVERHEAD
