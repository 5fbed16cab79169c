"""Keeps the probes' device tensors and moves them to the host in one transfer per flush.

During a step the probes only produce 0-d and 1-d tensors on the device and append them here;
nothing is read. At a sync point everything pending (probe values, timestep gradients, and the
loss of every step since the previous sync) is concatenated on the device and copied to the host
at once. The losses are how divergence is detected without a per-step synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .records import ProbeBatch, TimestepBatch

ScalarKey = tuple[str, str | None]  # one value per step
VectorKey = tuple[str, tuple[str, ...]]  # one value per step and layer, in this order


@dataclass
class Schema:
    """The layout of one recorded step: fixed for a run, set by its first recorded step."""

    scalar_keys: list[ScalarKey]
    vector_keys: list[VectorKey]
    host_keys: list[ScalarKey]  # values known on the host (the learning rate): never on the device

    @property
    def vector_size(self) -> int:
        return sum(len(layers) for _, layers in self.vector_keys)


@dataclass
class _Host:
    """Records already on the host, waiting to be handed out."""

    steps: list[int] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # one (M,) row per step
    timestep_steps: list[int] = field(default_factory=list)
    timestep_rows: list[np.ndarray] = field(default_factory=list)


class Recorder:
    def __init__(
        self,
        on_flush: Callable[[ProbeBatch], None],
        flush_every: int,
        layer_order: list[str],
        finish: Callable[[dict[ScalarKey, np.ndarray]], dict[ScalarKey, np.ndarray]],
        timesteps: np.ndarray | None = None,
        recurrent_layers: int = 0,
        has_cell: bool = False,
    ) -> None:
        self._on_flush = on_flush
        self._flush_every = flush_every
        self._layer_order = layer_order
        self._finish = finish  # raw columns → published metrics (derived ratios, dropped helpers)
        self._timesteps = timesteps
        self._timestep_shape = (recurrent_layers, 0 if timesteps is None else len(timesteps))
        self._has_cell = has_cell
        self.schema: Schema | None = None
        # Device side, since the last sync.
        self._steps: list[int] = []
        self._scalars: list[torch.Tensor] = []  # 0-d
        self._vectors: list[torch.Tensor] = []  # 1-d
        self._host_values: list[list[float]] = []
        self._timestep_steps: list[int] = []
        self._timestep_vectors: list[torch.Tensor] = []  # 1-d: hidden (L·T'), then cell (L·T')
        self._losses: list[torch.Tensor] = []  # 0-d, every step
        self._first_loss_step = 0
        self._host = _Host()
        self.last_loss: float | None = None
        self.last_accuracy: float | None = None

    @property
    def pending(self) -> int:
        """Recorded steps not yet synchronised."""
        return len(self._steps)

    def loss(self, loss: torch.Tensor) -> None:
        """Keep the loss of every step (detached, still on the device)."""
        self._losses.append(loss.detach())

    def record(
        self,
        step: int,
        schema: Schema,
        scalars: list[torch.Tensor],
        vectors: list[torch.Tensor],
        host_values: list[float],
    ) -> None:
        if self.schema is None:
            self.schema = schema
        elif len(scalars) != len(self.schema.scalar_keys) or len(vectors) != len(self.schema.vector_keys):
            raise RuntimeError(f"step {step} recorded a different set of probes than the first recorded step")
        self._steps.append(step)
        self._scalars.extend(scalars)
        self._vectors.extend(vectors)
        self._host_values.append(host_values)

    def record_timesteps(self, step: int, norms: torch.Tensor) -> None:
        self._timestep_steps.append(step)
        self._timestep_vectors.append(norms)

    def sync(self, final: bool = False) -> int | None:
        """Move everything pending to the host; hand out a batch when due. Returns the first
        step whose loss was not finite (its batch is handed out at once, later steps dropped)."""
        parts = []
        if self._scalars:
            parts.append(torch.stack(self._scalars))
        if self._vectors:
            parts.append(torch.cat(self._vectors))
        if self._timestep_vectors:
            parts.append(torch.cat(self._timestep_vectors))
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
        schema = self.schema
        count = len(self._steps)
        offset = 0
        if count:
            assert schema is not None
            scalar_width = len(schema.scalar_keys)
            scalars = host[offset : offset + count * scalar_width].reshape(count, scalar_width)
            offset += count * scalar_width
            vector_width = schema.vector_size
            vectors = host[offset : offset + count * vector_width].reshape(count, vector_width)
            offset += count * vector_width
            values = np.asarray(self._host_values, dtype=np.float64).reshape(count, -1)
            rows = np.concatenate([scalars, vectors, values], axis=1)
            self._host.steps.extend(self._steps)
            self._host.rows.extend(rows)
        timestep_count = len(self._timestep_steps)
        if timestep_count:
            width = host.size - offset - len(self._losses)
            rows = host[offset : offset + width].reshape(timestep_count, width // timestep_count)
            offset += width
            self._host.timestep_steps.extend(self._timestep_steps)
            self._host.timestep_rows.extend(rows)
        losses = host[offset:]
        first_step = self._first_loss_step
        self._first_loss_step += len(losses)
        self._steps, self._scalars, self._vectors, self._host_values = [], [], [], []
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
        host.steps, host.rows = host.steps[:keep], host.rows[:keep]
        keep = sum(1 for s in host.timestep_steps if s <= step)
        host.timestep_steps, host.timestep_rows = host.timestep_steps[:keep], host.timestep_rows[:keep]

    def _emit(self) -> None:
        host = self._host
        if not host.steps and not host.timestep_steps:
            return
        values: dict[ScalarKey, np.ndarray] = {}
        if host.steps:
            assert self.schema is not None
            table = np.stack(host.rows)  # (S, M)
            column = 0
            for key in self.schema.scalar_keys:
                values[key] = table[:, column]
                column += 1
            for metric, layers in self.schema.vector_keys:
                for layer in layers:
                    values[(metric, layer)] = table[:, column]
                    column += 1
            for key in self.schema.host_keys:
                values[key] = table[:, column]
                column += 1
            values = self._finish(values)
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
