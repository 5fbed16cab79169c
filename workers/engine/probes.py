"""Gradient, weight, activation and through-time probes, computed on the device.

Nothing here reads a device value: every statistic is written into the Recorder's buffers or
handed to it as a device tensor, and copied to the host once per flush. What can be derived
on the host from what was measured (mean |g| = Σ|g|/n, std from Σg and Σg², ‖Δw‖/‖w‖, the
per-tensor figures from per-row partial sums) is derived there, in float64, so that the
training step runs as few kernels as possible: each costs a dispatch (a few µs on a CPU) and
a pass over the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch

from .activations import RECTIFYING, SATURATING, saturation_bound
from .models import RecurrentLayer
from .row_statistics import STATISTICS, RowStatistics
from .through_time import Preactivations, preactivations, state_gradients

class FlatParameters:
    """Every parameter and its gradient as a view into one (R, C) buffer each.

    Parameter i occupies rows [start_i, start_i + k_i), k_i = ⌈n_i / C⌉, zero-padded to a whole
    row, so a statistic of every tensor is one kernel over the buffer along dim 1 (→ (R,)) and
    a sum over each tensor's rows on the host, instead of one kernel per tensor. (PyTorch's
    segment_reduce / index_add_ would avoid the padding, but on a CPU they are 10-30× slower
    than a plain row reduction.) The padding is never touched by the optimiser (it sees only
    the views), so it stays zero and adds nothing to sums, norms or maxima of |g|.

    Gradients are zeroed in place (one kernel) instead of being set to None, so that autograd
    accumulates into the views: 0 + g is g exactly.
    """

    def __init__(self, params: list[torch.nn.Parameter], scratch: bool) -> None:
        sizes = [p.numel() for p in params]
        self.width = _row_width(sizes)
        rows = [max(1, math.ceil(n / self.width)) for n in sizes]
        self.row_starts = np.cumsum([0, *rows[:-1]]).astype(np.int64)  # for np.add.reduceat
        self.numel = np.array(sizes, dtype=np.float64)
        self.padded = np.array(rows, dtype=np.float64) * self.width  # elements incl. padding
        count, reference = sum(rows), params[0]
        like = {"device": reference.device, "dtype": reference.dtype}
        # (3, R, C) when probing: the gradient, then scratch rows for |g| and finite flags, so
        # that Σg, Σ|g| and the finite count are one reduction over the block.
        self.grad_block = torch.zeros(3 if scratch else 1, count, self.width, **like)
        self.grad = self.grad_block[0]  # (R, C)
        self.weight = torch.zeros(count, self.width, **like)  # (R, C)
        flat_weight, flat_grad = self.weight.view(-1), self.grad.view(-1)
        with torch.no_grad():
            for p, start, n in zip(params, self.row_starts, sizes):
                offset = int(start) * self.width
                flat_weight[offset : offset + n].copy_(p.detach().reshape(-1))
                p.data = flat_weight[offset : offset + n].view(p.shape)
                p.grad = flat_grad[offset : offset + n].view(p.shape)
        self.rows = count

    def zero_grad(self) -> None:
        self.grad.zero_()


def _row_width(sizes: list[int]) -> int:
    """The widest row (≤ 1024, ≥ 32) that wastes at most 1/8 of the buffer on padding."""
    total = sum(sizes)
    width = 1024
    while width > 32 and sum(math.ceil(n / width) * width for n in sizes) > total * 1.125:
        width //= 2
    return width


@dataclass(frozen=True)
class DerivedUpdate:
    """Plain SGD's step is w ← w − lr (s g + λ w), with s the clipping factor min(1, τ/‖g‖)
    (Pascanu et al. 2013, Alg. 1; 1 without clipping) and λ the weight decay. So per row
    ‖Δw‖² = lr² (s² ‖g‖² + 2 s λ ⟨g, w⟩ + λ² ‖w‖²), from statistics the fused pass already has:
    no copy of the weights before the step and no pass over them after it."""

    weight_decay: float
    max_norm: float | None  # norm clipping's τ, or None without clipping


class ParameterProbe:
    """Per parameter tensor: ‖g‖, mean |g|, std g, max |g|, #NaN/Inf, ‖w‖ and ‖Δw‖/‖w‖.

    `gradients()` runs after backward and before clipping and the step, so the gradient
    statistics describe ∂L/∂θ itself and ‖w‖ the weights the step starts from: one pass over
    both buffers (row_statistics.py). ‖Δw‖ is derived on the host for plain SGD (`derived`);
    for every other optimiser `before_update()` / `after_update()` bracket the step and measure
    it. Each writes per-row partial results with `out=` into the views of one Recorder row (see
    `views()`): no allocation in the step. `finish()` turns them into per-tensor figures.
    """

    def __init__(
        self, names: list[str], flat: FlatParameters, derived: DerivedUpdate | None = None, fused: bool = False, native: bool = True
    ) -> None:
        self.names = tuple(names)
        self.flat = flat
        self.derived = derived
        rows = flat.rows
        # Row layout: the 7 row statistics (‖g‖ | Σg, Σ|g|, #finite | max |g| | ‖w‖ | ⟨g, w⟩), then ‖Δw‖.
        self.width = (STATISTICS + 1) * rows
        self._product = derived is not None and derived.weight_decay != 0.0
        self._statistics = RowStatistics(flat.grad_block, flat.weight, fused, native)
        if derived is None:
            self._weights = torch.zeros(2, rows, flat.width, dtype=flat.weight.dtype, device=flat.weight.device)

    @property
    def compiled(self) -> bool:
        """Whether the statistics now come from the compiled kernel (else the plain path)."""
        return self._statistics.compiled

    def views(self, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where one recorded step's raw columns go, inside `row` (a view of the Recorder's buffer):
        the (7, R) row statistics and the (R,) measured ‖Δw‖."""
        rows = self.flat.rows
        return row[: STATISTICS * rows].view(STATISTICS, rows), row[STATISTICS * rows : self.width]

    def gradients(self, views: tuple[torch.Tensor, torch.Tensor]) -> None:
        self._statistics(views[0], self._product)

    def before_update(self) -> None:
        if self.derived is None:
            self._weights[0].copy_(self.flat.weight)

    def after_update(self, views: tuple[torch.Tensor, torch.Tensor]) -> None:
        if self.derived is None:
            torch.sub(self._weights[0], self.flat.weight, out=self._weights[1])  # w_before − w_after
            torch.linalg.vector_norm(self._weights[1], dim=1, out=views[1])

    def finish(self, raw: np.ndarray, lr: np.ndarray | None = None, total_norm: np.ndarray | None = None) -> dict[tuple[str, str], np.ndarray]:
        """Per-tensor metrics from the raw columns of S steps, (S, width) → {(metric, name): (S,)}, float64.
        `lr` and `total_norm` (‖g‖ over all parameters before clipping), (S,) each, serve the derived ‖Δw‖."""
        rows, flat = self.flat.rows, self.flat
        starts = flat.row_starts

        def column(index: int) -> np.ndarray:
            return raw[:, index * rows : (index + 1) * rows]

        def per_tensor(block: np.ndarray) -> np.ndarray:  # (S, R) → (S, P): sum over each tensor's rows
            return np.add.reduceat(block, starts, axis=1)

        grad_square = per_tensor(column(0) ** 2)
        grad_norm = np.sqrt(grad_square)
        total = per_tensor(column(1))
        sum_abs = per_tensor(column(2))
        nonfinite = flat.padded - per_tensor(column(3))  # padding counts as finite
        max_abs = np.maximum.reduceat(column(4), starts, axis=1)  # NaN propagates
        weight_square = per_tensor(column(5) ** 2)
        weight_norm = np.sqrt(weight_square)
        count = flat.numel
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.derived is None:
                update_norm = np.sqrt(per_tensor(column(7) ** 2))
            else:
                update_norm = self._derived_update(grad_square, per_tensor(column(6)), weight_square, lr, total_norm)
            mean = total / count
            # Population std from Σg and Σg² = ‖g‖²: accurate unless |mean| ≫ std (float32 inputs).
            std = np.sqrt(np.maximum(grad_square / count - mean * mean, 0.0))  # NaN passes
            metrics = {
                "grad_norm": grad_norm,
                "grad_mean_abs": sum_abs / count,
                "grad_std": std,
                "grad_max_abs": max_abs,
                "grad_nonfinite": nonfinite,
                "weight_norm": weight_norm,
                "update_ratio": update_norm / weight_norm,
            }
        return {(metric, name): table[:, i] for metric, table in metrics.items() for i, name in enumerate(self.names)}

    def _derived_update(self, grad_square: np.ndarray, product: np.ndarray, weight_square: np.ndarray, lr: np.ndarray | None, total_norm: np.ndarray | None) -> np.ndarray:
        """‖Δw‖ per tensor of plain SGD, (S, P); see DerivedUpdate."""
        derived = self.derived
        assert derived is not None and lr is not None
        scale = np.ones_like(lr)
        if derived.max_norm is not None:
            assert total_norm is not None
            scale = np.minimum(1.0, derived.max_norm / total_norm)  # inf (‖g‖ = 0) → 1, as on the device
        s, decay = scale[:, None], derived.weight_decay
        square = s * s * grad_square + (2.0 * s * decay * product if decay else 0.0) + decay * decay * weight_square
        return lr[:, None] * np.sqrt(np.maximum(square, 0.0))  # NaN passes


def timestep_indices(length: int, max_timesteps: int) -> np.ndarray:
    """Up to `max_timesteps` evenly spaced timesteps of 0 … length−1, first and last included."""
    if length <= max_timesteps:
        return np.arange(length, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, length - 1, max_timesteps)).astype(np.int64))


class ForwardTaps:
    """Collects one forward pass's internal tensors, and after backward, their statistics.

    Per layer (`layers=True`): ‖∂L/∂s‖ at the pre-activation s (MLP layers, the head), activation
    mean and std, the saturated fraction (σ/tanh/softsign) or the dead fraction (rectifiers: s ≤ 0
    on the whole batch), and for gated layers the mean gate values and their saturated fractions.
    Recurrent layers run in fused kernels that keep s inside, so their `backprop_norm` is ‖∂L/∂y‖
    of the layer's output sequence y as it arrives from the layer above (or the head), and their
    gate/activation statistics are recomputed from the inputs and outputs in one batched pass.
    The device produces sums and counts (`_`-prefixed keys); `finish()` turns them into means,
    standard deviations and fractions on the host.

    Through time (`timesteps`): ‖∂L/∂h_t‖ at the recorded timesteps, the total gradient from both
    uses of h_t, and for LSTMs ‖∂L/∂c_t‖, from the retained ∂L/∂y and the chain rule through
    the recomputed gates (through_time.py): the recurrence itself always runs as one fused call.

    One instance serves a whole run: `start()` before each tapped forward pass.
    """

    def __init__(
        self, activation: str, saturation_threshold: float, layers: bool, timesteps: np.ndarray | None, native: ModuleType | None = None
    ) -> None:
        self.activation = activation
        self.native = native  # the C++ probe loops (row_statistics.native_module), or None
        self.threshold = saturation_threshold
        self.layers = layers
        self.all_timesteps = timesteps
        self._sigmoid_bound = saturation_bound("sigmoid", saturation_threshold)
        self._tanh_bound = saturation_bound("tanh", saturation_threshold)
        self.counts: dict[str, float] = {}  # elements behind each layer's sums, for finish()
        self._inverse_bounds: dict[tuple[str, int, str], torch.Tensor] = {}
        self.start(timesteps is not None)

    def start(self, with_timesteps: bool) -> None:
        self.timesteps = self.all_timesteps if with_timesteps else None
        self.keys: list[tuple[str, str]] = []  # one per element of after_backward()'s values
        self._scalars: list[torch.Tensor] = []  # 0-d, keyed by the first len(...) keys
        self._scalar_keys: list[tuple[str, str]] = []
        self._vectors: list[torch.Tensor] = []  # 1-d, keyed after the scalars
        self._vector_keys: list[tuple[str, str]] = []
        self._retained: list[tuple[str, torch.Tensor]] = []  # (layer, tensor whose .grad is the signal)
        self._recurrent: dict[int, tuple[RecurrentLayer, torch.Tensor, torch.Tensor]] = {}

    # --- called by the models during the forward pass -------------------------------------

    def dense(self, index: int, pre: torch.Tensor, act: torch.Tensor) -> None:
        if not self.layers:
            return
        name = f"layers.{index}"
        pre.retain_grad()
        self._retained.append((name, pre))
        self._activation_stats(name, pre.detach(), act.detach(), self.activation)

    def head(self, out: torch.Tensor) -> None:
        if self.layers:
            out.retain_grad()
            self._retained.append(("head", out))

    def recurrent(self, index: int, layer: RecurrentLayer, x: torch.Tensor, out: torch.Tensor) -> None:
        if self.timesteps is None and not self.layers:
            return
        out.retain_grad()  # ∂L/∂y for backprop_norm, and the from-above part of ∂L/∂h_t
        # The gates are recomputed after backward, once for the gate statistics and the
        # recursion together, rather than kept through it: they never add to the step's peak
        # memory (autograd's saved tensors are freed by then).
        self._recurrent[index] = (layer, x, out)
        if self.layers:
            self._retained.append((f"layers.{index}", out))

    # --- statistics --------------------------------------------------------------------------

    def _add(self, metric: str, layer: str, value: torch.Tensor) -> None:
        self._scalar_keys.append((metric, layer))
        self._scalars.append(value)

    def _add_vector(self, metrics: list[str], layer: str, value: torch.Tensor) -> None:
        self._vector_keys.extend((metric, layer) for metric in metrics)
        self._vectors.append(value)

    def _sums(self, name: str, act: torch.Tensor) -> None:
        # Σa and ‖a‖ (= √Σa²) in two fast passes; mean and std follow on the host.
        self.counts[name] = float(act.numel())
        self._add("_act_sum", name, act.sum())
        self._add("_act_norm", name, torch.linalg.vector_norm(act))

    def _activation_stats(self, name: str, pre: torch.Tensor, act: torch.Tensor, activation: str) -> None:
        self._sums(name, act)
        if activation in SATURATING:
            self._add("_act_saturated", name, _count_above(pre, saturation_bound(activation, self.threshold)))
        elif activation in RECTIFYING:
            # Dead on this batch: s ≤ 0 for every example (and every timestep). Counted as the
            # units that are alive (the "0-norm" of relu(max s)): float kernels, fast on a CPU.
            self.counts[f"{name}/units"] = float(pre.shape[-1])
            self._add("_act_alive", name, torch.linalg.vector_norm(torch.relu(pre.amax(dim=0)), 0))

    def _inverse(self, pre: torch.Tensor, key: tuple[str, int, str], bounds: list[float], size: int) -> torch.Tensor:
        """1/bound for every column of `pre`, one bound per block of `size` columns; made once."""
        inverse = self._inverse_bounds.get(key)
        if inverse is None:
            inverse = torch.tensor(bounds, dtype=pre.dtype, device=pre.device).repeat_interleave(size).reciprocal_()
            self._inverse_bounds[key] = inverse
        return inverse

    def _beyond(self, pre: torch.Tensor, key: tuple[str, int, str], bounds: list[float], size: int) -> torch.Tensor:
        """Per column block of `size` units: how many |s| exceed the block's bound, (blocks,).
        Four fast float passes (|s|, ·1/bound, > 1, Σ); bool tensors are slow on a CPU."""
        scaled = pre.abs().mul_(self._inverse(pre, key, bounds, size))
        torch.gt(scaled, 1.0, out=scaled)
        return scaled.sum(0).view(-1, size).sum(1)

    def _recurrent_stats(self, name: str, layer: RecurrentLayer, pre: Preactivations, out: torch.Tensor) -> None:
        size = layer.hidden_size
        if layer.kind == "gru":  # r, z, n; n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
            from_input, from_state = pre.from_input, pre.from_state
            assert from_input is not None and from_state is not None
            gates = from_input[:, : 2 * size] + from_state[:, : 2 * size]  # (T·B, 2H)
            candidate = torch.addcmul(from_input[:, 2 * size :], torch.sigmoid(gates[:, :size]), from_state[:, 2 * size :])
            self._gates(name, layer, gates, ["reset", "update"], size)
            self._sums(name, out)
            self._add("_act_saturated", name, _count_above(candidate, self._tanh_bound))
            return
        assert pre.summed is not None
        if layer.kind == "rnn":  # (T·B, H)
            self._activation_stats(name, pre.summed, out, layer.activation)
            return
        # LSTM blocks i, f, g, o: σ gates, and the tanh candidate g (its saturation is the layer's).
        self._gates(name, layer, pre.summed, ["input", "forget", "candidate", "output"], size)
        self._sums(name, out)

    def _gates(self, name: str, layer: RecurrentLayer, pre: torch.Tensor, blocks: list[str], size: int) -> None:
        """Σσ(s) and the saturated count per gate block of the (B·T, G·H) pre-activations."""
        self.counts[f"{name}/gates"] = float(pre.shape[0] * size)
        bounds = [self._tanh_bound if b == "candidate" else self._sigmoid_bound for b in blocks]
        key = (name, pre.shape[1], layer.kind)
        if self.native is not None and pre.dtype == torch.float32 and pre.is_contiguous() and pre.device.type == "cpu" and pre.shape[1] % 8 == 0:
            # One pass over the pre-activations instead of six (probe_kernel.cpp).
            sums, saturated = self.native.gate_statistics(pre, self._inverse(pre, key, bounds, size))
            sigmoid_sums, counts = sums.view(-1, size).sum(1).to(pre.dtype), saturated.view(-1, size).sum(1)
        else:
            sigmoid_sums, counts = torch.sigmoid(pre).sum(0).view(-1, size).sum(1), self._beyond(pre, key, bounds, size)
        self._add_vector([f"_gate_sum_{b}" for b in blocks], name, sigmoid_sums)
        self._add_vector([f"_gate_saturated_{b}" for b in blocks], name, counts)

    def after_backward(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The layer values (1-d, one per element of `keys`) and the timestep norms."""
        if self._retained:
            grads = [tensor.grad if tensor.grad is not None else torch.zeros_like(tensor) for _, tensor in self._retained]
            self._scalars.extend(torch._foreach_norm(grads))
            self._scalar_keys.extend(("backprop_norm", name) for name, _ in self._retained)
        timestep_norms = self._recurrent_probes()
        self.keys = self._scalar_keys + self._vector_keys
        parts = ([torch.stack(self._scalars)] if self._scalars else []) + self._vectors
        values = (torch.cat(parts) if len(parts) > 1 else parts[0]) if parts else None
        self._retained, self._recurrent = [], {}
        return values, timestep_norms

    def finish(self, values: dict) -> None:
        """Raw sums and counts → published means, standard deviations and fractions (in place)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            for name, count in self.counts.items():
                if name.endswith("/gates"):
                    self._finish_gates(values, name[: -len("/gates")], count)
                    continue
                if name.endswith("/units"):
                    continue
                if ("_act_sum", name) not in values:
                    continue
                mean = values.pop(("_act_sum", name)) / count
                norm = values.pop(("_act_norm", name))
                values[("act_mean", name)] = mean
                # Population std from E[a²] − E[a]²: activations are bounded or O(1), |mean| is not ≫ std.
                values[("act_std", name)] = np.sqrt(np.maximum(norm * norm / count - mean * mean, 0.0))
                if ("_act_saturated", name) in values:
                    values[("act_saturation", name)] = values.pop(("_act_saturated", name)) / count
                if ("_act_alive", name) in values:
                    values[("act_dead", name)] = 1.0 - values.pop(("_act_alive", name)) / self.counts[f"{name}/units"]

    @staticmethod
    def _finish_gates(values: dict, name: str, count: float) -> None:
        for key in [key for key in values if key[1] == name and key[0].startswith("_gate_")]:
            raw = values.pop(key) / count
            block = key[0].rsplit("_", 1)[1]
            if block == "candidate":
                if key[0].startswith("_gate_saturated"):
                    values[("act_saturation", name)] = raw  # the LSTM's tanh candidate
            elif key[0].startswith("_gate_saturated"):
                values[(f"gate_{block}_saturation", name)] = raw
            else:
                values[(f"gate_{block}", name)] = raw

    @torch.no_grad()
    def _recurrent_probes(self) -> torch.Tensor | None:
        """The recurrent layers' gate statistics (when `layers`), and their timestep norms
        (when `timesteps`): L·T' hidden norms, then L·T' cell norms for LSTMs, 1-d."""
        hidden_norms, cell_norms = [], []
        for index in sorted(self._recurrent):
            layer, x, out = self._recurrent[index]
            pre = preactivations(layer, x.detach(), out.detach())
            if self.layers:
                self._recurrent_stats(f"layers.{index}", layer, pre, out.detach())
            if self.timesteps is None:
                continue
            ends = torch.as_tensor(self.timesteps, device=out.device)
            hidden, cell = state_gradients(layer, pre, _grad(out), self.native)  # (T, B, H) each
            hidden_norms.append(torch.linalg.vector_norm(hidden.index_select(0, ends), dim=(1, 2)))
            if cell is not None:
                cell_norms.append(torch.linalg.vector_norm(cell.index_select(0, ends), dim=(1, 2)))
        return torch.cat(hidden_norms + cell_norms) if hidden_norms else None


def _count_above(values: torch.Tensor, bound: float) -> torch.Tensor:
    """How many |v| exceed `bound`, as a 0-d float: |v| > bound written as 0/1 floats in place,
    then summed (bool tensors and the "0-norm" are several times slower on a CPU)."""
    scaled = values.abs()
    return torch.gt(scaled, bound, out=scaled).sum()


def _grad(tensor: torch.Tensor) -> torch.Tensor:
    """A retained gradient, or zeros where nothing flowed back."""
    return tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)


def parameter_order(model: torch.nn.Module) -> list[str]:
    """Layer names and parameter names interleaved input → output: layers.0, layers.0.weight, …, head.bias."""
    order: list[str] = []
    for layer in model.layer_names():  # type: ignore[operator]
        order.append(layer)
        module = model.get_submodule(layer)
        order.extend(f"{layer}.{name}" for name, _ in module.named_parameters())
    return order
