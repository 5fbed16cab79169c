"""Keeps the probes' device results and moves them to the host in one transfer per sync.

During a step nothing is read: the parameter probes write their per-row partial results with
`out=` straight into a preallocated device buffer (one row per recorded step, `row()`), the
layer probes hand over one 1-d tensor, the loss is kept as a 0-d tensor for every step, and for
the accuracy only references to the logits and targets are kept. At a sync, everything pending
is concatenated on the device and copied to the host at once; the accuracy of all pending steps
is one batched comparison there. The losses are how divergence is detected without a per-step
synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .records import ProbeBatch, TimestepBatch

MetricKey = tuple[str, str | None]
# (S, W) raw device columns and the host-side values → published values (derived, `_` keys dropped).
Finish = Callable[[np.ndarray, dict[MetricKey, np.ndarray]], dict[MetricKey, np.ndarray]]


@dataclass
class _Host:
    """Records already on the host, waiting to be handed out."""

    steps: list[int] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)  # (W,) per recorded step
    scalars: list[np.ndarray] = field(default_factory=list)  # loss, accuracy, lr, layer values per step
    timestep_steps: list[int] = field(default_factory=list)
    timestep_rows: list[np.ndarray] = field(default_factory=list)


class Recorder:
    def __init__(
        self,
        on_flush: Callable[[ProbeBatch], None],
        flush_every: int,
        layer_order: list[str],
        finish: Finish,
        vector_width: int,
        reference: torch.Tensor,
        classification: bool,
        timesteps: np.ndarray | None = None,
        recurrent_layers: int = 0,
        has_cell: bool = False,
    ) -> None:
        self._on_flush = on_flush
        self._flush_every = flush_every
        self._layer_order = layer_order
        self._finish = finish
        self._classification = classification
        self._timesteps = timesteps
        self._timestep_shape = (recurrent_layers, 0 if timesteps is None else len(timesteps))
        self._has_cell = has_cell
        # One row per recorded step since the last sync (at most flush_every of them), pre-sliced.
        self._buffer = reference.new_zeros(flush_every, vector_width)
        self._rows = list(self._buffer.unbind(0))
        self.layer_keys: list[MetricKey] | None = None  # fixed by the first recorded step
        # Device side, since the last sync.
        self._steps: list[int] = []
        self._lrs: list[float] = []
        self._layer_values: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._timestep_steps: list[int] = []
        self._timestep_vectors: list[torch.Tensor] = []  # 1-d: hidden (L·T'), then cell (L·T')
        self._losses: list[torch.Tensor] = []  # 0-d, every step
        self._first_loss_step = 0
        self._host = _Host()
        self.last_loss: float | None = None
        self.last_accuracy: float | None = None

    def state(self) -> dict:
        """The counters a checkpoint keeps; taken only right after a sync that handed
        everything out, so nothing else is pending."""
        return {
            "first_loss_step": self._first_loss_step,
            "layer_keys": None if self.layer_keys is None else [list(key) for key in self.layer_keys],
            "last_loss": self.last_loss,
            "last_accuracy": self.last_accuracy,
        }

    def load_state(self, state: dict) -> None:
        self._first_loss_step = int(state["first_loss_step"])
        keys = state["layer_keys"]
        self.layer_keys = None if keys is None else [(metric, layer) for metric, layer in keys]
        self.last_loss, self.last_accuracy = state["last_loss"], state["last_accuracy"]

    @property
    def pending(self) -> int:
        """Recorded steps not yet synchronised."""
        return len(self._steps)

    def loss(self, loss: torch.Tensor) -> None:
        """Keep the loss of every step (detached, still on the device)."""
        self._losses.append(loss.detach())

    def row(self) -> torch.Tensor:
        """The (W,) device row that the step about to be recorded writes its raw columns into."""
        return self._rows[len(self._steps)]

    def record(
        self,
        step: int,
        lr: float,
        output: torch.Tensor,
        target: torch.Tensor,
        layer_values: torch.Tensor | None,
        layer_keys: list[MetricKey],
    ) -> None:
        if self.layer_keys is None:
            self.layer_keys = list(layer_keys)
        elif len(layer_keys) != len(self.layer_keys):
            raise RuntimeError(f"step {step} recorded a different set of probes than the first recorded step")
        self._steps.append(step)
        self._lrs.append(lr)
        if layer_values is not None:
            self._layer_values.append(layer_values)
        if self._classification:
            self._outputs.append(output.detach())
            self._targets.append(target)

    def record_timesteps(self, step: int, norms: torch.Tensor) -> None:
        self._timestep_steps.append(step)
        self._timestep_vectors.append(norms)

    def sync(self, final: bool = False) -> int | None:
        """Move everything pending to the host; hand out a batch when due. Returns the first
        step whose loss was not finite (its batch is handed out at once, later steps dropped)."""
        count = len(self._steps)
        parts = [self._buffer[:count].reshape(-1)] if count else []
        parts += self._layer_values + self._timestep_vectors
        if self._outputs:
            parts.append(_accuracies(self._outputs, self._targets))
        if self._losses:
            parts.append(torch.stack(self._losses))
        if not parts:
            if final:
                self._emit()
            return None
        flat = torch.cat(parts) if len(parts) > 1 else parts[0]
        host = flat.detach().to("cpu", torch.float64).numpy()  # sync: the one device→host copy per flush
        diverged_at = self._unpack(host)
        if diverged_at is not None:
            self._drop_after(diverged_at)
            self._emit()
        elif final or len(self._host.steps) >= self._flush_every:
            self._emit()
        return diverged_at

    def _unpack(self, host: np.ndarray) -> int | None:
        count, losses_count = len(self._steps), len(self._losses)
        width = self._buffer.shape[1]
        vectors = host[: count * width].reshape(count, width)
        offset = count * width
        layer_width = len(self.layer_keys or []) if self._layer_values else 0
        layers = host[offset : offset + count * layer_width].reshape(count, layer_width)
        offset += count * layer_width
        timestep_count = len(self._timestep_steps)
        accuracy_count = count if self._outputs else 0
        timestep_width = host.size - offset - accuracy_count - losses_count
        timesteps = host[offset : offset + timestep_width].reshape(timestep_count, -1) if timestep_count else None
        offset += timestep_width
        accuracy = host[offset : offset + accuracy_count]
        losses = host[offset + accuracy_count :]
        first_step = self._first_loss_step
        if count:
            recorded_losses = losses[np.asarray(self._steps) - first_step]
            columns = [recorded_losses[:, None], np.asarray(self._lrs)[:, None], layers]
            if accuracy_count:
                columns.append(accuracy[:, None])
            self._host.steps.extend(self._steps)
            self._host.vectors.extend(vectors)
            self._host.scalars.extend(np.concatenate(columns, axis=1))
        if timesteps is not None:
            self._host.timestep_steps.extend(self._timestep_steps)
            self._host.timestep_rows.extend(timesteps)
        self._first_loss_step += losses_count
        self._steps, self._lrs, self._layer_values, self._outputs, self._targets = [], [], [], [], []
        self._timestep_steps, self._timestep_vectors, self._losses = [], [], []
        if len(losses):
            self.last_loss = float(losses[-1])
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            self.last_loss = float(losses[bad[0]])
            return first_step + int(bad[0])
        return None

    def _drop_after(self, step: int) -> None:
        host = self._host
        keep = sum(1 for s in host.steps if s <= step)
        host.steps, host.vectors, host.scalars = host.steps[:keep], host.vectors[:keep], host.scalars[:keep]
        keep = sum(1 for s in host.timestep_steps if s <= step)
        host.timestep_steps, host.timestep_rows = host.timestep_steps[:keep], host.timestep_rows[:keep]

    def _emit(self) -> None:
        host = self._host
        if not host.steps and not host.timestep_steps:
            return
        values: dict[MetricKey, np.ndarray] = {}
        if host.steps:
            scalars = np.stack(host.scalars)  # (S, 2 + layer values [+ accuracy])
            keys: list[MetricKey] = [("loss", None), ("lr", None), *(self.layer_keys or [])]
            if self._classification:
                keys.append(("accuracy", None))
            values = {key: scalars[:, column] for column, key in enumerate(keys[: scalars.shape[1]])}
            values = self._finish(np.stack(host.vectors), values)
            if ("accuracy", None) in values:
                self.last_accuracy = float(values[("accuracy", None)][-1])
        emitted = {layer for _, layer in values if layer is not None}
        batch = ProbeBatch(
            steps=np.asarray(host.steps, dtype=np.int64),
            values=values,
            layers=tuple(name for name in self._layer_order if name in emitted),
            timesteps=self._timestep_batch(),
        )
        self._host = _Host()
        self._on_flush(batch)

    def _timestep_batch(self) -> TimestepBatch | None:
        host = self._host
        if self._timesteps is None or not host.timestep_steps:
            return None
        table = np.stack(host.timestep_rows)  # (S, (1 or 2)·L·T')
        count = len(host.timestep_steps)
        layers, width = self._timestep_shape
        hidden = table[:, : layers * width].reshape(count, layers, width)
        cell = table[:, layers * width :].reshape(count, layers, width) if self._has_cell else None
        return TimestepBatch(
            steps=np.asarray(host.timestep_steps, dtype=np.int64),
            timesteps=self._timesteps.copy(),
            hidden_grad_norm=hidden,
            cell_grad_norm=cell,
        )


def _accuracies(outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Fraction of correct predictions of each pending step, (S,): batched when shapes agree."""
    if all(o.shape == outputs[0].shape for o in outputs) and all(t.shape == targets[0].shape for t in targets):
        correct = torch.stack(outputs).argmax(-1) == torch.stack(targets)  # (S, B) or (S, B, T)
        return correct.flatten(1).mean(1, dtype=outputs[0].dtype)
    return torch.stack([torch.mean(o.argmax(-1) == t, dtype=o.dtype) for o, t in zip(outputs, targets)])
