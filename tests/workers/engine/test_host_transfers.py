"""The probes reach the host once per flush (README, docs/architecture.md): a measurement.

Every way a tensor's value can reach Python is counted while the engine trains: `.item()`,
`.tolist()`, `.cpu()`, `.numpy()`, `float()`, `int()`, `bool()` of a tensor and `.to()` a
CPU device. The counting wrappers call the real methods; nothing of the engine is replaced.
The claim: inside the training loop no value reaches the host except in the Recorder's
sync, which copies once per flush, however many parameters.

What counts as a device→host read: on CUDA, a read of a CUDA tensor. On the CPU, where
every tensor is a host tensor, a read made by the engine's own code (workers/engine), which
is where the same run on CUDA would synchronise; torch.optim's reads of its `step`
counters are not counted (they live on the CPU whatever the device unless the optimiser is
`capturable` or `fused`: no synchronisation), nor the trainer's per-epoch shuffle order,
which goes host → device.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import workers.engine
from workers.engine import (
    ClippingConfig,
    DatasetConfig,
    ModelConfig,
    ProbeBatch,
    ProbeConfig,
    RunConfig,
    TrainingConfig,
    train,
)
from workers.engine.recorder import Recorder

COUNTED = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


ENGINE = str(Path(workers.engine.__file__).resolve().parent)
SHUFFLE = "_shuffle"  # workers/engine/batches.py BatchStream: the epoch's order, host → device


def _device_read(tensor: torch.Tensor) -> bool:
    if tensor.device.type != "cpu":
        return True
    caller = sys._getframe(2)  # noqa: SLF001 - the code that called the tensor method
    return caller.f_code.co_filename.startswith(ENGINE) and caller.f_code.co_name != SHUFFLE


class Transfers:
    """Counts host reads of tensors by where they happen: in the loop, in a sync, elsewhere."""

    def __init__(self) -> None:
        self.in_loop = False
        self.in_sync = threading.local()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.syncs = 0

    def where(self) -> str:
        if getattr(self.in_sync, "depth", 0):
            return "sync"
        return "loop" if self.in_loop else "outside"

    def note(self, kind: str) -> None:
        self.counts[(self.where(), kind)] += 1

    def total(self, where: str) -> int:
        return sum(count for (place, _), count in self.counts.items() if place == where)


@pytest.fixture
def transfers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Transfers]:
    seen = Transfers()
    for name in COUNTED:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, __original=original, __name=name, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if _device_read(self):
                seen.note(__name)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    original_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu" and _device_read(self):
            seen.note("to(cpu)")
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    original_sync = Recorder.sync

    def counting_sync(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.syncs += 1
        seen.in_sync.depth = getattr(seen.in_sync, "depth", 0) + 1
        try:
            return original_sync(self, *args, **kwargs)
        finally:
            seen.in_sync.depth -= 1

    monkeypatch.setattr(Recorder, "sync", counting_sync)
    yield seen


def _config(hidden: tuple[int, ...], steps: int, flush_every: int) -> RunConfig:
    return RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=hidden, activation="tanh"),
        dataset=DatasetConfig(name="digits"),
        training=TrainingConfig(steps=steps, batch_size=32, optimizer="adam", lr=0.01),
        clipping=ClippingConfig(mode="norm", max_norm=1.0),
        device="cuda" if torch.cuda.is_available() else "cpu",
        probes=ProbeConfig(log_every=1, flush_every=flush_every),  # every probe, every step
    )


def _train_counting(transfers: Transfers, config: RunConfig) -> list[ProbeBatch]:
    batches: list[ProbeBatch] = []

    def should_stop() -> bool:  # called at the top of every step: the loop has begun
        transfers.in_loop = True
        return False

    def on_flush(batch: ProbeBatch) -> None:
        batches.append(batch)
        if sum(len(b.steps) for b in batches) == config.training.steps:
            transfers.in_loop = False  # the last flush: what follows is the evaluation

    result = train(config, on_flush, should_stop)
    assert result.status == "succeeded"
    return batches


@pytest.mark.parametrize("hidden", [(16,), (16, 16, 16, 16)])
def test_the_training_loop_reaches_the_host_only_in_the_recorders_sync(transfers: Transfers, hidden) -> None:  # noqa: ANN001
    config = _config(hidden, steps=40, flush_every=10)
    batches = _train_counting(transfers, config)
    print(f"hidden {hidden}: {dict(transfers.counts)}, {transfers.syncs} syncs")
    assert [len(batch.steps) for batch in batches] == [10, 10, 10, 10]
    assert transfers.total("loop") == 0, f"host reads in the training step: {transfers.counts}"
    # One copy of everything recorded per flush: a single `.to(cpu)` (and the host view of
    # it) per batch handed out; the final sync found nothing left to copy.
    assert transfers.counts[("sync", "to(cpu)")] == transfers.counts[("sync", "numpy")] == len(batches)
    assert transfers.total("sync") == 2 * len(batches)


def test_host_reads_per_flush_do_not_grow_with_the_parameters_or_the_steps(transfers: Transfers) -> None:
    per_flush = {}
    for hidden, steps in (((16,), 20), ((16, 16, 16, 16), 20), ((16,), 60)):
        transfers.counts.clear()
        transfers.syncs = 0
        batches = _train_counting(transfers, _config(hidden, steps=steps, flush_every=10))
        assert transfers.total("loop") == 0
        per_flush[(hidden, steps)] = transfers.total("sync") / len(batches)
    print("host reads per sync:", per_flush)
    assert len(set(per_flush.values())) == 1, per_flush
