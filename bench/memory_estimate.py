"""The memory estimate (service/budgets/memory.py) against the peak a real run reaches.

    .venv/bin/python -m bench.memory_estimate

Each spec trains in a forked child of this process (torch and the engine already
imported there, so their import costs are not counted): the child reads its peak
resident set size (`ru_maxrss`) before and after `train()`, and the growth is the run's
measured peak. tests/service/budgets/test_memory_measured.py asserts the ratio on a few
of these; this script prints the table behind README's "Budgets" paragraph.
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

from service.budgets import estimate_spec_memory
from service.config import Limits, Settings
from service.schemas.spec import ExperimentSpec


UNBOUNDED = Limits(max_parameters=2**62, max_run_memory_bytes=2**62, max_points_per_experiment=2**62)


def measured_peak(spec: dict[str, Any], settings: Settings) -> int:
    """Peak resident memory growth in bytes of training `spec` in a forked child."""
    import torch  # noqa: F401 - imported before the fork, so not counted

    import workers.engine  # noqa: F401
    from workers.engine import train
    from workers.spec import to_run_config

    config = to_run_config(spec, settings)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: train, report the growth, exit without cleanup
        code = 1
        try:
            os.close(read_end)
            import torch as child_torch

            child_torch.set_num_threads(1)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            train(config, lambda batch: None)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            os.write(write_end, str((after - before) * 1024).encode())  # ru_maxrss is in KiB on Linux
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        text = reader.read()
    _, status = os.waitpid(pid, 0)
    if not text:
        raise RuntimeError(f"the measuring child failed (wait status {status})")
    return int(text)


def validated(spec: dict[str, Any], budgets: bool = True) -> dict[str, Any]:
    """The spec as the API stores it; `budgets=False` validates it against budgets no
    spec reaches, to estimate what the default budgets refuse."""
    context = None if budgets else {"limits": UNBOUNDED}
    return ExperimentSpec.model_validate(spec, context=context).model_dump(mode="json")


def adding(kind: str, hidden: int, seq_len: int, batch: int, limit: int, **training: Any) -> dict[str, Any]:
    return {
        "model": {"type": kind, "hidden_size": hidden},
        "dataset": {"name": "adding", "seq_len": seq_len, "limit": limit},
        "training": {"optimizer": "adam", "lr": 0.001, "batch_size": batch, "steps": 6, **training},
    }


def mlp(widths: list[int], batch: int, optimizer: str = "adam", dataset: str = "mnist") -> dict[str, Any]:
    return {
        "model": {"type": "mlp", "hidden_sizes": widths, "activation": "tanh"},
        "dataset": {"name": dataset, "split": "test", "limit": 4 * batch} if dataset == "mnist" else {"name": dataset},
        "training": {"optimizer": optimizer, "lr": 0.001, "batch_size": batch, "steps": 6},
    }


SPECS = {
    "mlp 4×1024 adam b256": mlp([1024] * 4, 256),
    "mlp 2×2048 adam b512": mlp([2048, 2048], 512),
    "mlp 8×512 sgd b1024": mlp([512] * 8, 1024, optimizer="sgd"),
    "rnn 256 T200 b256": adding("rnn", 256, 200, 256, 1024),
    "rnn 512 T400 b128": adding("rnn", 512, 400, 128, 512),
    "lstm 256 T200 b256": adding("lstm", 256, 200, 256, 1024),
    "lstm 128 T500 b128": adding("lstm", 128, 500, 128, 512),
    "gru 256 T200 b256": adding("gru", 256, 200, 256, 1024),
    "gru 128 T500 b128": adding("gru", 128, 500, 128, 512),
    "rnn 32 data 20000×T1000": adding("rnn", 32, 1000, 64, 20_000, full_batch=False),
}


def main(names: list[str]) -> None:
    settings = Settings()
    print(f"{'spec':28} {'measured MiB':>12} {'estimate MiB':>12} {'ratio':>6}")
    for name, spec in SPECS.items():
        if names and name not in names:
            continue
        spec = validated(spec)
        measured = measured_peak(spec, settings)
        estimate = estimate_spec_memory(spec).total
        print(f"{name:28} {measured / 2**20:12.1f} {estimate / 2**20:12.1f} {estimate / measured:6.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
