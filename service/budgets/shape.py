"""What a spec will put in memory, read from the stored spec alone (no torch, no data).

Every budget starts here: the tensor shapes the engine will build for a validated,
fully defaulted spec (`ExperimentSpec.model_dump(mode="json")`, which is also what the
experiment row keeps, so the worker derives the same shapes). The numbers mirror the
engine's loaders and models (workers/engine/datasets/, workers/engine/models.py);
tests/service/budgets check them against what a real run builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (example shape (T, D), training examples available, held-out examples, outputs) per
# dataset. MNIST's split "test" trains on 9,000 of the 10,000 test images and holds out
# 1,000; digits holds out 360 of 1,797; MNIST-1D ships 4,000 + 1,000 sequences.
_VECTOR_DATASETS: dict[str, tuple[tuple[int, int], int, int, int]] = {
    "mnist": ((28, 28), 60_000, 10_000, 10),
    "digits": ((8, 8), 1_797 - 360, 360, 10),
    "mnist1d": ((40, 1), 4_000, 1_000, 10),
}
MNIST_TEST_SPLIT = (9_000, 1_000)
GENERATED_TEST_SEQUENCES = 1_000  # DatasetConfig.num_test
COPY_LENGTH = 10  # symbols the copy task reads and recalls (T = delay + 2 × 10)
RECURRENT_KINDS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # blocks stacked in weight_ih / weight_hh
# Recorded steps per flush when the spec leaves it to the worker (GRADWATCH_FLUSH_EVERY's
# default; a worker configured higher keeps proportionally more probe rows).
DEFAULT_FLUSH_EVERY = 50


@dataclass(frozen=True)
class RunShape:
    kind: str  # mlp | rnn | lstm | gru
    dataset: str
    hidden_sizes: tuple[int, ...]  # mlp
    hidden_size: int  # recurrent
    num_layers: int  # recurrent
    activation: str
    sequence: tuple[int, int]  # one example, (T, D); an MLP sees T·D features
    train_count: int
    test_count: int
    outputs: int
    classification: bool
    many_to_many: bool  # a target at every timestep (copy)
    batch: int  # examples per step
    full_batch: bool  # every step uses the whole training set (no shuffled copies)
    optimizer: str
    momentum: float
    nesterov: bool
    weight_decay: float
    steps: int
    log_every: int
    flush_every: int
    timesteps_every: int
    max_timesteps: int

    @property
    def recurrent(self) -> bool:
        return self.kind in RECURRENT_KINDS

    @property
    def features(self) -> int:
        return self.sequence[0] * self.sequence[1]

    @property
    def depth(self) -> int:
        """Hidden layers (mlp) or recurrent layers."""
        return self.num_layers if self.recurrent else len(self.hidden_sizes)


def run_shape(spec: dict[str, Any]) -> RunShape:
    """The shapes of the run a validated spec (as JSON) describes."""
    model, dataset = spec["model"], spec["dataset"]
    training, logging = spec.get("training") or {}, spec.get("logging") or {}
    name = dataset["name"]
    limit = int(dataset.get("limit") or 5_000)
    seq_len = dataset.get("seq_len")
    if name in _VECTOR_DATASETS:
        sequence, available, test_count, outputs = _VECTOR_DATASETS[name]
        if name == "mnist" and dataset.get("split", "train") == "test":
            available, test_count = MNIST_TEST_SPLIT
        train_count = min(limit, available)
    elif name == "sequential_mnist":
        sequence = (784, 1) if seq_len in (None, 784) else (28, 28)
        available, test_count = MNIST_TEST_SPLIT if dataset.get("split", "train") == "test" else (60_000, 10_000)
        train_count, outputs = min(limit, available), 10
    else:  # generated: `limit` is how many training sequences to make
        length = int(seq_len or 50)
        sequence = {
            "adding": (length, 2),
            "copy": (length + 2 * COPY_LENGTH, COPY_LENGTH),
            "temporal_order": (length, 6),
        }[name]
        train_count, test_count = limit, GENERATED_TEST_SEQUENCES
        outputs = {"adding": 1, "copy": 9, "temporal_order": 4}[name]
    batch_size = int(training.get("batch_size", 64))
    full_batch = bool(training.get("full_batch")) or batch_size >= train_count
    optimizer = training.get("optimizer", "sgd")
    momentum = float(training.get("momentum") or 0.0)
    return RunShape(
        kind=model["type"],
        dataset=name,
        hidden_sizes=tuple(int(size) for size in model.get("hidden_sizes") or (30, 30)),
        hidden_size=int(model.get("hidden_size", 64)),
        num_layers=int(model.get("num_layers", 1)),
        activation=model.get("activation", "tanh") if model["type"] in ("mlp", "rnn") else "tanh",
        sequence=sequence,
        train_count=train_count,
        test_count=test_count,
        outputs=outputs,
        classification=name != "adding",
        many_to_many=name == "copy",
        batch=train_count if full_batch else batch_size,
        full_batch=full_batch,
        optimizer="momentum" if optimizer == "sgd" and momentum else optimizer,
        momentum=momentum,
        nesterov=bool(training.get("nesterov")),
        weight_decay=float(training.get("weight_decay") or 0.0),
        steps=int(training.get("steps", 1_000)),
        log_every=int(logging.get("every", 1)),
        flush_every=int(logging.get("flush_every") or DEFAULT_FLUSH_EVERY),
        timesteps_every=int(logging.get("timesteps_every", 10)),
        max_timesteps=int(logging.get("max_timesteps", 100)),
    )
