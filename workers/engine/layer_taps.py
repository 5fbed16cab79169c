"""Layer and through-time probes: what the forward pass's internal tensors and their gradients show.

The models hand their internal tensors to a `ForwardTaps` during the forward pass (MLP layers,
the head, recurrent layers); after backward it turns them into per-layer device values and the
timestep norms, which the Recorder copies to the host once per flush, like every probe
(probes.py). The heaviest of these statistics come from the C++ probe loops where they can
serve (probe_kernel.cpp; `native`), else from plain PyTorch.
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import itertools

import numpy as np
import torch

from .activations import RECTIFYING, SATURATING, saturation_bound
from .lstm_kernel import LstmProbe
from .models import RecurrentLayer
from .through_time import Preactivations, preactivations, state_gradients

_NOTHING = torch.empty(0)  # a retained tensor's gradient that never arrived: norm 0


def timestep_indices(length: int, max_timesteps: int) -> np.ndarray:
    """Up to `max_timesteps` evenly spaced timesteps of 0 … length−1, first and last included."""
    if length <= max_timesteps:
        return np.arange(length, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, length - 1, max_timesteps)).astype(np.int64))


class DenseLayout(NamedTuple):
    """What a dense layer's tap does every step, worked out at its first forward pass."""

    name: str
    native: bool  # its figures from the C++ loop (float32, 2-d, CPU), else plain PyTorch
    keys: list[tuple[str, str]]  # _activation_stats' keys, in its order
    placeholders: list[torch.Tensor]  # one None per key: filled by _dense_values
    mode: int  # the C++ loop's: 0 sums only, 1 saturated count, 2 alive units
    bound: float  # |s| beyond which a saturating unit counts as saturated
    units: float  # a rectifier's units (for its dead fraction), else 0


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
    An LSTM layer that runs in gradwatch's own kernel (lstm_kernel.py) hands both its gate
    statistics and its through-time norms over from inside its forward and backward instead:
    nothing is recomputed for it.

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
        self._dense_layouts: dict[int, DenseLayout] = {}  # by layer index, made at its first forward
        self.start(timesteps is not None)

    def start(self, with_timesteps: bool) -> None:
        self.timesteps = self.all_timesteps if with_timesteps else None
        self.keys: list[tuple[str, str]] = []  # one per element of after_backward()'s values
        self._scalars: list[torch.Tensor] = []  # 0-d, keyed by the first len(...) keys
        self._scalar_keys: list[tuple[str, str]] = []
        self._vectors: list[torch.Tensor] = []  # 1-d, keyed after the scalars
        self._vector_keys: list[tuple[str, str]] = []
        self._retained: list[tuple[str, torch.Tensor]] = []  # (layer, tensor whose .grad is the signal)
        # index → (layer, x, y, the kernel's probe where the layer ran gradwatch's LSTM, else None)
        self._recurrent: dict[int, tuple[RecurrentLayer, torch.Tensor, torch.Tensor, LstmProbe | None]] = {}
        # Dense layers whose statistics the C++ loop computes after backward, all in one call:
        # (position in _scalars, how many, s, a, mode, saturation bound).
        self._deferred: list[tuple[int, int, torch.Tensor, torch.Tensor, int, float]] = []

    # --- called by the models during the forward pass -------------------------------------

    def dense(self, index: int, pre: torch.Tensor, act: torch.Tensor) -> None:
        # Called for every layer of every tapped forward: the checks and keys that are the
        # same each step are made once (DenseLayout); Python is most of the cost here.
        if not self.layers:
            return
        layout = self._dense_layouts.get(index)
        if layout is None:
            layout = self._dense_layouts[index] = self._dense_layout(index, pre)
        name = layout.name
        pre.retain_grad()
        self._retained.append((name, pre))
        if not layout.native:
            self._activation_stats(name, pre.detach(), act.detach(), self.activation)
            return
        # Its figures come from one C++ call for every dense layer in after_backward
        # (_dense_values), in _activation_stats' key order; pre and act go undetached.
        self.counts[name] = float(act.numel())
        if layout.units:
            self.counts[f"{name}/units"] = layout.units
        self._deferred.append((len(self._scalars), len(layout.keys), pre, act, layout.mode, layout.bound))
        self._scalar_keys.extend(layout.keys)
        self._scalars.extend(layout.placeholders)

    def _dense_layout(self, index: int, pre: torch.Tensor) -> DenseLayout:
        name = f"layers.{index}"
        native = self.native is not None and pre.dtype == torch.float32 and pre.dim() == 2 and pre.device.type == "cpu"
        keys = [("_act_sum", name), ("_act_norm", name)]
        mode, bound, units = 0, 0.0, 0.0
        if self.activation in SATURATING:
            mode, bound = 1, saturation_bound(self.activation, self.threshold)
            keys.append(("_act_saturated", name))
        elif self.activation in RECTIFYING:
            mode, units = 2, float(pre.shape[-1])
            keys.append(("_act_alive", name))
        return DenseLayout(name, native, keys, [None] * len(keys), mode, bound, units)  # type: ignore[list-item]

    def _dense_values(self, grads: list[torch.Tensor | None]) -> torch.Tensor | None:
        """The deferred dense figures from one C++ call. Where they are every scalar of the
        step (an MLP on the CPU), the retained gradients' norms come from the same call and the
        step's scalars are returned as one vector, in key order; else the figures go into their
        positions in _scalars and None is returned."""
        if not self._deferred:
            return None
        assert self.native is not None
        positions, widths, pres, acts, modes, bounds = zip(*self._deferred)
        self._deferred = []
        # Positions 0, w0, w0 + w1, …: the figures are the scalars, in key order (no recurrent
        # layer adds its own after them).
        if sum(widths) == len(self._scalars) and not self._recurrent:
            normed = [grad if grad is not None else _NOTHING for grad in grads]
            return self.native.dense_statistics(list(pres), list(acts), list(modes), list(bounds), normed)
        values = self.native.dense_statistics(list(pres), list(acts), list(modes), list(bounds), [])
        for position, width, start in zip(positions, widths, itertools.accumulate(widths, initial=0)):
            self._scalars[position : position + width] = values[start : start + width].unbind(0)
        return None

    def head(self, out: torch.Tensor) -> None:
        if self.layers:
            out.retain_grad()
            self._retained.append(("head", out))

    def kernel_probe(self, index: int, layer: RecurrentLayer) -> LstmProbe | None:
        """What gradwatch's LSTM layer should measure inside itself on this step (None: nothing)."""
        if layer.kind != "lstm" or (self.timesteps is None and not self.layers):
            return None
        bounds = [self._sigmoid_bound, self._sigmoid_bound, self._tanh_bound, self._sigmoid_bound]  # i, f, g, o
        sample = layer.weight_hh
        return LstmProbe(self._inverse(sample, (f"layers.{index}", sample.shape[0], "lstm"), bounds, layer.hidden_size) if self.layers else None)

    def recurrent(self, index: int, layer: RecurrentLayer, x: torch.Tensor, out: torch.Tensor, probe: LstmProbe | None = None) -> None:
        if self.timesteps is None and not self.layers:
            return
        out.retain_grad()  # ∂L/∂y for backprop_norm, and the from-above part of ∂L/∂h_t
        # Where PyTorch's kernel ran, the gates are recomputed after backward, once for the
        # gate statistics and the recursion together, rather than kept through it: they never
        # add to the step's peak memory (autograd's saved tensors are freed by then).
        self._recurrent[index] = (layer, x, out, probe if probe is not None and probe.taken else None)
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

    def _kernel_stats(self, name: str, layer: RecurrentLayer, probe: LstmProbe) -> None:
        """The keys _recurrent_stats writes for an LSTM, in its order, from the kernel's sums:
        its gate statistics, then Σh and ‖h‖ of the output sequence."""
        statistics = probe.statistics
        assert statistics is not None
        width, size = 4 * layer.hidden_size, layer.hidden_size
        # T·B·H elements behind each gate block's sums, and behind Σh and ‖h‖.
        self.counts[f"{name}/gates"] = self.counts[name] = float(probe.elements)
        dtype = layer.weight_hh.dtype
        blocks = ["input", "forget", "candidate", "output"]
        self._add_vector([f"_gate_sum_{b}" for b in blocks], name, statistics[:width].view(4, size).sum(1).to(dtype))
        self._add_vector([f"_gate_saturated_{b}" for b in blocks], name, statistics[width : 2 * width].view(4, size).sum(1).to(dtype))
        self._add("_act_sum", name, statistics[2 * width].to(dtype))
        self._add("_act_norm", name, statistics[2 * width + 1].sqrt().to(dtype))

    def after_backward(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The layer values (1-d, one per element of `keys`) and the timestep norms."""
        scalars = self._dense_values([tensor.grad for _, tensor in self._retained])
        if scalars is None and self._retained:
            # A gradient that never arrived (nothing below the loss used the tensor) has norm 0.
            grads = [tensor.grad if tensor.grad is not None else torch.zeros_like(tensor) for _, tensor in self._retained]
            self._scalars.extend(torch._foreach_norm(grads))
        self._scalar_keys.extend(("backprop_norm", name) for name, _ in self._retained)
        timestep_norms = self._recurrent_probes()  # adds the recurrent layers' scalars and vectors
        if scalars is None and self._scalars:
            scalars = torch.stack(self._scalars)
        self.keys = self._scalar_keys + self._vector_keys
        parts = ([scalars] if scalars is not None else []) + self._vectors
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
            layer, x, out, probe = self._recurrent[index]
            if probe is not None:
                if self.layers:
                    self._kernel_stats(f"layers.{index}", layer, probe)
                if self.timesteps is not None:
                    ends = torch.as_tensor(self.timesteps, device=out.device)
                    # No gradient reached the layer (nothing below the loss used it): zeros, as _grad gives.
                    norms = probe.norms if probe.norms is not None else out.new_zeros(2, out.shape[1])
                    hidden_norms.append(norms[0].index_select(0, ends))
                    cell_norms.append(norms[1].index_select(0, ends))
                continue
            pre = preactivations(layer, x.detach(), out.detach())
            if self.layers:
                self._recurrent_stats(f"layers.{index}", layer, pre, out.detach())
            if self.timesteps is None:
                continue
            ends = torch.as_tensor(self.timesteps, device=out.device)
            hidden, cell = state_gradients(layer, pre, _grad(out))  # (T, B, H) each
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
