"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is taken between two steps, right after a flush that handed every recorded
step out (so the recorder holds nothing pending but a few running totals): the model's
and the optimiser's state, the number of steps done (which is also the learning-rate
schedule's position: `optim.learning_rate` is a function of the step), the position in
the data order, every random generator's state, and the recorder's counters. Restored
into a freshly built run with the same spec, on CPU, the steps that follow are
bit-identical to those of an uninterrupted run (tests/workers/engine/test_checkpoint.py).

Serialised with `torch.save` into bytes and read back with `torch.load(weights_only=True)`:
only tensors, numbers, strings and containers of them, never arbitrary pickled objects, so
a checkpoint read from the database cannot run code in the worker. NumPy's generator state
is therefore stored as a tensor and its ints.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1


@dataclass
class Checkpointing:
    """What the trainer needs to take and resume checkpoints; None in `train` means off.

    `every`: training steps between checkpoints (a multiple of `probes.flush_every`, so a
    checkpoint falls on a flush); 0: only on demand. `save(step, payload)` receives the
    serialised checkpoint taken after `step` steps. `resume_from`: a payload to continue
    from. `on_stop()`: asked when `should_stop` stops the run; True takes one more
    checkpoint there (a warm shutdown hands the run to another worker)."""

    every: int
    save: Callable[[int, bytes], None]
    resume_from: bytes | None = None
    on_stop: Callable[[], bool] = field(default=lambda: False)


@dataclass
class RunState:
    """The restorable state of a run after `step` steps."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    data_order: dict[str, Any]
    recorder: dict[str, Any]
    rng: dict[str, Any]


def capture_rng() -> dict[str, Any]:
    """Every generator a run may draw from: torch's CPU (and CUDA) ones, NumPy's and
    Python's global ones (dataset loaders and user code may use them)."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gauss"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_bytes(state: RunState) -> bytes:
    """The checkpoint as bytes. Tensors are copied to the CPU first: `torch.save` of a
    device tensor would tie the checkpoint to that device."""
    document = {
        "format": FORMAT_VERSION,
        "step": state.step,
        "model": _on_cpu(state.model),  # sync: device → host copy of the weights, per checkpoint
        "optimizer": _on_cpu(state.optimizer),
        "data_order": state.data_order,
        "recorder": state.recorder,
        "rng": state.rng,
    }
    buffer = io.BytesIO()
    torch.save(document, buffer)
    return buffer.getvalue()


def from_bytes(payload: bytes) -> RunState:
    document = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if document.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint format {document.get('format')!r} is not {FORMAT_VERSION}: "
            "it was written by another gradwatch version"
        )
    return RunState(
        step=int(document["step"]),
        model=document["model"],
        optimizer=document["optimizer"],
        data_order=document["data_order"],
        recorder=document["recorder"],
        rng=document["rng"],
    )


def _on_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(item) for item in value)
    return value
