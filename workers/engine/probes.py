"""Gradient, weight, activation and through-time probes, computed on the device.

Nothing here reads a device value: every statistic is a 0-d or 1-d tensor handed to the
Recorder, which copies them to the host once per flush. Statistics that are cheap to derive
on the host from ones already measured (mean |g| = Σ|g|/n, std, ‖Δw‖/‖w‖) are derived there
in float64, to save kernels in the training step.
"""

from __future__ import annotations

import numpy as np
import torch

from .activations import RECTIFYING, SATURATING, saturation_bound
from .models import GATES, RecurrentLayer

# Per-parameter metrics as published, and the raw columns they are derived from.
PARAMETER_METRICS = (
    "grad_norm",
    "grad_mean_abs",
    "grad_std",
    "grad_max_abs",
    "grad_nonfinite",
    "weight_norm",
    "update_ratio",
)
GATE_NAMES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update")}


class ParameterProbe:
    """Per parameter tensor: ‖g‖, mean |g|, std g, max |g|, #NaN/Inf, ‖w‖ and ‖Δw‖/‖w‖.

    `gradients()` runs after backward and before clipping, so gradient statistics describe
    ∂L/∂θ itself (the global norm after clipping is recorded separately); `before_update()` /
    `after_update()` bracket the optimiser step.
    """

    def __init__(self, names: list[str], params: list[torch.nn.Parameter]) -> None:
        self.names = tuple(names)
        self.params = [p.detach() for p in params]  # views of the same storage, outside autograd
        self.numel = np.array([p.numel() for p in params], dtype=np.float64)
        self._before = [p.detach().clone() for p in params]  # reused buffers for w before the step

    def vector_keys(self) -> list[tuple[str, tuple[str, ...]]]:
        names = self.names
        return [
            ("grad_norm", names),
            ("weight_norm", names),
            ("_grad_sum_abs", names),
            ("grad_max_abs", names),
            ("_grad_sum", names),
            ("grad_nonfinite", names),
            ("_update_norm", names),
        ]

    def gradients(self, grads: list[torch.Tensor], grad_norms: list[torch.Tensor]) -> list[torch.Tensor]:
        """Statistics of the raw gradients; `grad_norms` are their L2 norms, already computed."""
        weight_norms = torch._foreach_norm(self.params)
        magnitudes = torch._foreach_abs(grads)
        max_abs = torch._foreach_max(magnitudes)
        sum_abs = [m.sum() for m in magnitudes]
        sums = [g.sum() for g in grads]
        # g − g is 0 where g is finite and NaN where it is ±Inf or NaN: count the non-zeros.
        nonfinite = [torch.count_nonzero(d) for d in torch._foreach_sub(grads, grads)]
        return [
            torch.stack(grad_norms),
            torch.stack(weight_norms),
            torch.stack(sum_abs),
            torch.stack(max_abs),
            torch.stack(sums),
            torch.stack(nonfinite).to(grads[0].dtype),  # exact up to 2²⁴ elements per tensor in float32
        ]

    def before_update(self) -> None:
        torch._foreach_copy_(self._before, self.params)

    def after_update(self) -> torch.Tensor:
        """‖w_before − w_after‖ per tensor, (P,)."""
        torch._foreach_sub_(self._before, self.params)
        return torch.stack(torch._foreach_norm(self._before))

    def finish(self, values: dict) -> None:
        """Derive the published metrics from the raw columns, in place (float64, on the host)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            for index, name in enumerate(self.names):
                count = self.numel[index]
                norm = values[("grad_norm", name)]
                total = values.pop(("_grad_sum", name))
                values[("grad_mean_abs", name)] = values.pop(("_grad_sum_abs", name)) / count
                mean = total / count
                # Population std from Σg and Σg² = ‖g‖²: accurate unless |mean| ≫ std (float32 inputs).
                variance = norm * norm / count - mean * mean
                values[("grad_std", name)] = np.sqrt(np.maximum(variance, 0.0))  # NaN/Inf pass through
                values[("update_ratio", name)] = values.pop(("_update_norm", name)) / values[("weight_norm", name)]


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

    Through time (`timesteps`): ‖∂L/∂h_t‖ at the recorded timesteps, the total gradient from both
    uses of h_t, and for LSTMs ‖∂L/∂c_t‖.
    """

    def __init__(
        self,
        activation: str,
        saturation_threshold: float,
        layers: bool,
        timesteps: np.ndarray | None,
    ) -> None:
        self.activation = activation
        self.threshold = saturation_threshold
        self.layers = layers
        self.timesteps = timesteps
        self._saturation_bound = saturation_bound(activation, saturation_threshold)
        self._sigmoid_bound = saturation_bound("sigmoid", saturation_threshold)
        self._tanh_bound = saturation_bound("tanh", saturation_threshold)
        self.scalar_keys: list[tuple[str, str | None]] = []
        self.scalars: list[torch.Tensor] = []
        self._retained: list[tuple[str, torch.Tensor]] = []  # (layer, tensor whose .grad is the signal)
        self._pieces: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]] = {}
        self._recurrent: dict[int, tuple[RecurrentLayer, torch.Tensor, torch.Tensor]] = {}

    # --- called by the models during the forward pass -------------------------------------

    def dense(self, index: int, pre: torch.Tensor, act: torch.Tensor) -> None:
        if not self.layers:
            return
        name = f"layers.{index}"
        pre.retain_grad()
        self._retained.append((name, pre))
        self._activation_stats(name, pre.detach(), act.detach(), self.activation, batch_dims=(0,))

    def head(self, out: torch.Tensor) -> None:
        if self.layers:
            out.retain_grad()
            self._retained.append(("head", out))

    def timestep_ends(self, length: int) -> list[int]:
        if self.timesteps is None:
            return [length - 1]
        return [int(t) for t in self.timesteps]

    def piece(self, index: int, out: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        if self.timesteps is None:
            return
        h, c = state
        out.retain_grad()
        h.retain_grad()
        if c is not None:
            c.retain_grad()
        self._pieces.setdefault(index, []).append((out, h, c))

    def recurrent(self, index: int, layer: RecurrentLayer, x: torch.Tensor, out: torch.Tensor) -> None:
        self._recurrent[index] = (layer, x, out)
        if not self.layers:
            return
        name = f"layers.{index}"
        out.retain_grad()
        self._retained.append((name, out))
        with torch.no_grad():
            self._recurrent_stats(name, layer, x.detach(), out.detach())

    # --- statistics --------------------------------------------------------------------------

    def _add(self, metric: str, layer: str, value: torch.Tensor) -> None:
        self.scalar_keys.append((metric, layer))
        self.scalars.append(value)

    def _mean_std(self, name: str, act: torch.Tensor) -> None:
        # E[a] and E[a²] in two plain passes: several times faster than std_mean's Welford pass,
        # and exact enough for activations (|mean| is not ≫ std); population std.
        mean = act.mean()
        self._add("act_mean", name, mean)
        self._add("act_std", name, torch.sqrt(torch.clamp(torch.mean(act * act) - mean * mean, min=0.0)))

    def _activation_stats(
        self, name: str, pre: torch.Tensor, act: torch.Tensor, activation: str, batch_dims: tuple[int, ...]
    ) -> None:
        self._mean_std(name, act)
        if activation in SATURATING:
            bound = saturation_bound(activation, self.threshold)
            self._add("act_saturation", name, torch.mean(pre.abs() > bound, dtype=pre.dtype))
        elif activation in RECTIFYING:
            # Dead on this batch: s ≤ 0 for every example (and every timestep).
            self._add("act_dead", name, torch.mean(pre.amax(dim=batch_dims) <= 0, dtype=pre.dtype))

    def _recurrent_stats(self, name: str, layer: RecurrentLayer, x: torch.Tensor, out: torch.Tensor) -> None:
        batch, steps, _ = x.shape
        size = layer.hidden_size
        previous = torch.cat([out.new_zeros(batch, 1, size), out[:, :-1]], 1)  # h_{t−1}, (B, T, H)
        from_input = torch.addmm(layer.bias_ih, x.reshape(batch * steps, -1), layer.weight_ih.t())
        from_state = torch.addmm(layer.bias_hh, previous.reshape(batch * steps, size), layer.weight_hh.t())
        if layer.kind == "rnn":
            pre = from_input + from_state  # (B·T, H)
            self._activation_stats(name, pre, out, layer.activation, batch_dims=(0,))
            return
        gates = GATES[layer.kind]
        if layer.kind == "lstm":  # i, f, g, o
            pre = from_input + from_state  # (B·T, 4H)
            sigmoid_blocks = {"input": 0, "forget": 1, "output": 3}
            candidate = pre[:, 2 * size : 3 * size]
        else:  # gru: r, z, n; n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
            pre = from_input[:, : 2 * size] + from_state[:, : 2 * size]
            sigmoid_blocks = {"reset": 0, "update": 1}
            reset = torch.sigmoid(pre[:, :size])
            candidate = from_input[:, 2 * size :] + reset * from_state[:, 2 * size :]
        # Whole blocks at once: (B·T, G·H) → per-block means (G,), then pick the σ gates.
        blocks = pre.shape[1] // size
        means = torch.sigmoid(pre).mean(0).view(blocks, size).mean(1)
        saturated = torch.mean(pre.abs() > self._sigmoid_bound, dim=0, dtype=pre.dtype).view(blocks, size).mean(1)
        for gate, block in sigmoid_blocks.items():
            self._add(f"gate_{gate}", name, means[block])
            self._add(f"gate_{gate}_saturation", name, saturated[block])
        assert gates in (3, 4)
        self._mean_std(name, out)
        self._add("act_saturation", name, torch.mean(candidate.abs() > self._tanh_bound, dtype=pre.dtype))

    def after_backward(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The per-layer signals (in `scalar_keys` order, appended) and the timestep norms."""
        if self._retained:
            grads = [tensor.grad if tensor.grad is not None else torch.zeros_like(tensor) for _, tensor in self._retained]
            for (name, _), norm in zip(self._retained, torch._foreach_norm(grads)):
                self._add("backprop_norm", name, norm)
        timestep_norms = self._timestep_norms() if self.timesteps is not None and self._pieces else None
        self._retained = []
        return self.scalars, timestep_norms

    @torch.no_grad()
    def _timestep_norms(self) -> torch.Tensor:
        """(L·T' hidden norms, then L·T' cell norms for LSTMs), 1-d."""
        hidden_norms, cell_norms = [], []
        for index in sorted(self._pieces):
            pieces = self._pieces[index]
            # ∂L/∂h_t = from the output at t (layer above / head) + from the state handed to t+1.
            hidden = torch.stack(
                [_grad(out)[:, -1] + _grad(h)[0] for out, h, _ in pieces]
            )  # (T', B, H)
            hidden_norms.append(torch.linalg.vector_norm(hidden, dim=(1, 2)))
            layer, x, out = self._recurrent[index]
            if layer.kind == "lstm":
                cell_norms.append(self._cell_norms(layer, x.detach(), out.detach(), pieces, hidden))
        return torch.cat(hidden_norms + cell_norms)

    def _cell_norms(self, layer: RecurrentLayer, x: torch.Tensor, out: torch.Tensor, pieces: list, hidden: torch.Tensor) -> torch.Tensor:
        """‖∂L/∂c_t‖: the fused kernel hides the path c_t → h_t = o_t ⊙ tanh(c_t) inside a piece,
        so only the future path reaches the carried c_t; add the hidden one by the chain rule."""
        ends = torch.as_tensor(self.timesteps, device=x.device)
        size = layer.hidden_size
        previous = torch.cat([out.new_zeros(out.shape[0], 1, size), out[:, :-1]], 1)[:, ends]  # (B, T', H)
        pre = (
            x[:, ends] @ layer.weight_ih[3 * size :].t()
            + previous @ layer.weight_hh[3 * size :].t()
            + layer.bias_ih[3 * size :]
            + layer.bias_hh[3 * size :]
        )
        output_gate = torch.sigmoid(pre).transpose(0, 1)  # (T', B, H)
        cell = torch.stack([c[0] for _, _, c in pieces])  # (T', B, H)
        future = torch.stack([_grad(c)[0] for _, _, c in pieces])
        total = future + hidden * output_gate * (1.0 - torch.tanh(cell) ** 2)
        return torch.linalg.vector_norm(total, dim=(1, 2))


def _grad(tensor: torch.Tensor) -> torch.Tensor:
    """A retained gradient, or zeros where nothing flowed back (the last piece's carried state)."""
    return tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)


def parameter_order(model: torch.nn.Module) -> list[str]:
    """Layer names and parameter names interleaved input → output: layers.0, layers.0.weight, …, head.bias."""
    order: list[str] = []
    for layer in model.layer_names():  # type: ignore[operator]
        order.append(layer)
        module = model.get_submodule(layer)
        order.extend(f"{layer}.{name}" for name, _ in module.named_parameters())
    return order

