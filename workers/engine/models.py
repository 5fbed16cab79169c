"""The networks: an MLP, and Elman RNN / LSTM / GRU stacks with a linear head.

Recurrent layers run fused kernels, 3-5× faster than a Python loop over timesteps: PyTorch's
(oneDNN on CPU, cuDNN on CUDA), which hide the hidden states between steps, so the true ∂L/∂h_t
is rebuilt afterwards from the output sequence and its gradient (through_time.py); or, for a
float32 LSTM on a CPU, gradwatch's own (lstm_kernel.py), which takes the gate statistics and the
through-time norms inside its forward and backward. Each layer is always one call over the whole
sequence, probed or not.

Both models take an optional `taps` object (see probes.py) that they hand their internal
tensors to; with `taps=None` the forward pass is exactly the bare network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from .activations import activation_function
from .lstm_kernel import LstmProbe, lstm, serves

if TYPE_CHECKING:
    from .probes import ForwardTaps

GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # blocks stacked in weight_ih / weight_hh, PyTorch's order


class MLP(nn.Module):
    """in → hidden_sizes[0] → … → out; the activation after every hidden layer, none after the head."""

    def __init__(
        self,
        in_features: int,
        hidden_sizes: tuple[int, ...],
        out_features: int,
        activation: str,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        sizes = (in_features, *hidden_sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], out_features)
        self.activation = activation
        self._act = activation_function(activation, negative_slope)

    def layer_names(self) -> list[str]:
        """Probe layers, input → output."""
        return [f"layers.{i}" for i in range(len(self.layers))] + ["head"]

    def forward(self, x: torch.Tensor, taps: ForwardTaps | None = None) -> torch.Tensor:
        x = x.flatten(1)  # (B, F)
        for index, layer in enumerate(self.layers):
            pre = layer(x)  # (B, H): the pre-activation s of Glorot & Bengio 2010
            x = self._act(pre)
            if taps is not None:
                taps.dense(index, pre, x)
        out = self.head(x)  # (B, C)
        if taps is not None:
            taps.head(out)
        return out


class RecurrentLayer(nn.Module):
    """One Elman RNN, LSTM or GRU layer, with nn.RNN's parameter layout (one layer of it)."""

    def __init__(
        self, kind: str, input_size: int, hidden_size: int, activation: str, negative_slope: float
    ) -> None:
        super().__init__()
        gates = GATES[kind]
        self.kind = kind
        self.hidden_size = hidden_size
        self.activation = activation if kind == "rnn" else "tanh"
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))  # (G·H, D)
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))  # (G·H, H)
        self.bias_ih = nn.Parameter(torch.empty(gates * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(gates * hidden_size))
        # Elman RNNs with tanh/relu have a fused kernel; any other activation runs a Python loop.
        self.fused = kind != "rnn" or activation in ("tanh", "relu")
        self._act = activation_function(self.activation, negative_slope)
        self.kernel: ModuleType | None = None  # gradwatch's LSTM layer (lstm_kernel.py), when set
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default for nn.RNN/LSTM/GRU: every tensor ~ U(−1/√H, 1/√H)."""
        bound = self.hidden_size**-0.5
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = x.new_zeros(1, x.shape[0], self.hidden_size)  # (1, B, H): one layer
        return h, (h if self.kind == "lstm" else None)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor | None], probe: LstmProbe | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """x (B, T, D), state (h (1, B, H), c or None) → output (B, T, H), state after x.
        `probe` asks gradwatch's LSTM layer for its statistics; PyTorch's kernels ignore it."""
        weights = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        h, c = state
        if self.kind == "lstm" and serves(self.kernel, self.hidden_size, x):
            assert c is not None and self.kernel is not None
            return lstm(x, (h, c), weights, self.kernel, probe)
        # Arguments after the weights: has_biases, num_layers, dropout, train, bidirectional, batch_first.
        if self.kind == "lstm":
            out, h, c = torch.lstm(x, (h, c), weights, True, 1, 0.0, self.training, False, True)
            return out, (h, c)
        if self.kind == "gru":
            out, h = torch.gru(x, h, weights, True, 1, 0.0, self.training, False, True)
            return out, (h, None)
        if self.fused:
            kernel = torch.rnn_tanh if self.activation == "tanh" else torch.rnn_relu
            out, h = kernel(x, h, weights, True, 1, 0.0, self.training, False, True)
            return out, (h, None)
        return self._loop(x, h)

    def _loop(
        self, x: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """h_t = f(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh), one timestep at a time."""
        batch, steps, _ = x.shape
        inputs = torch.addmm(self.bias_ih, x.reshape(batch * steps, -1), self.weight_ih.t())
        inputs = inputs.view(batch, steps, -1)  # (B, T, H), the input part of every step at once
        recurrent = self.weight_hh.t()
        state = h[0]  # (B, H)
        outputs = []
        for t in range(steps):
            state = self._act(torch.addmm(self.bias_hh, state, recurrent) + inputs[:, t])
            outputs.append(state)
        # The state handed on is a view, a node of its own, as in the fused kernels.
        return torch.stack(outputs, 1), (state.view(1, batch, -1), None)


class RecurrentNet(nn.Module):
    """Stacked recurrent layers and a linear head, many-to-one (last step) or many-to-many."""

    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        out_features: int,
        activation: str,
        many_to_many: bool,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        sizes = [input_size] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(
            RecurrentLayer(kind, sizes[i], hidden_size, activation, negative_slope)
            for i in range(num_layers)
        )
        self.head = nn.Linear(hidden_size, out_features)
        self.kind = kind
        self.many_to_many = many_to_many

    def layer_names(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.layers))] + ["head"]

    def use_kernel(self, native: ModuleType | None) -> None:
        """Run the LSTM layers in gradwatch's own kernel (the C++ probe module), or not (None)."""
        for layer in self.layers:
            layer.kernel = native if self.kind == "lstm" else None

    @contextmanager
    def plain_kernels(self) -> Iterator[None]:
        """PyTorch's kernels only, for as long as this lasts: they have a double backward."""
        kernels = [layer.kernel for layer in self.layers]
        self.use_kernel(None)
        try:
            yield
        finally:
            for layer, kernel in zip(self.layers, kernels):
                layer.kernel = kernel

    def forward(self, x: torch.Tensor, taps: ForwardTaps | None = None) -> torch.Tensor:
        """x (B, T, D) → (B, C) for many-to-one, (B, T, C) for many-to-many."""
        for index, layer in enumerate(self.layers):
            probe = taps.kernel_probe(index, layer) if taps is not None else None
            out, _ = layer(x, layer.initial_state(x), probe)  # (B, T, H): one fused call
            if taps is not None:
                taps.recurrent(index, layer, x, out, probe)
            x = out
        if not self.many_to_many:
            x = x[:, -1]  # (B, H)
        out = self.head(x)
        if taps is not None:
            taps.head(out)
        return out


def build_model(
    kind: str,
    input_shape: tuple[int, ...],
    out_features: int,
    many_to_many: bool,
    hidden_sizes: tuple[int, ...],
    hidden_size: int,
    num_layers: int,
    activation: str,
    negative_slope: float,
) -> nn.Module:
    """The network for a dataset whose examples have `input_shape` ((F,) or (T, D))."""
    if kind == "mlp":
        if many_to_many:
            raise ValueError("an mlp cannot solve a many-to-many sequence task; use rnn, lstm or gru")
        features = 1
        for size in input_shape:
            features *= size
        return MLP(features, tuple(hidden_sizes), out_features, activation, negative_slope)
    if len(input_shape) != 2:
        raise ValueError(f"a {kind} needs sequences shaped (T, D), got examples shaped {input_shape}")
    return RecurrentNet(
        kind, input_shape[1], hidden_size, num_layers, out_features, activation, many_to_many, negative_slope
    )
