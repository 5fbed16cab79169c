"""The chain rule through the recomputed gates (through_time.py) gives the true ∂L/∂h_t and
∂L/∂c_t of a layer run as one fused call: compare with a plain Python unroll of the same
weights, where every h_t and c_t is a tensor with its own .grad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from workers.engine.models import MLP, RecurrentNet, build_model
from workers.engine.probes import ForwardTaps, timestep_indices
from workers.engine.row_statistics import native_module


def reference(model: RecurrentNet, x: torch.Tensor) -> tuple[torch.Tensor, list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Unrolled forward, PyTorch's gate equations; returns output and every h_t, c_t per layer."""
    hs_all, cs_all = [], []
    inputs = x
    for layer in model.layers:
        size = layer.hidden_size
        h = x.new_zeros(x.shape[0], size)
        c = torch.zeros_like(h)
        hs, cs = [], []
        for t in range(inputs.shape[1]):
            gi = inputs[:, t] @ layer.weight_ih.t() + layer.bias_ih
            gh = h @ layer.weight_hh.t() + layer.bias_hh
            if layer.kind == "lstm":
                i, f, g, o = (gi + gh).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                c.retain_grad()
                cs.append(c)
            elif layer.kind == "gru":
                r = torch.sigmoid(gi[:, :size] + gh[:, :size])
                z = torch.sigmoid(gi[:, size : 2 * size] + gh[:, size : 2 * size])
                n = torch.tanh(gi[:, 2 * size :] + r * gh[:, 2 * size :])
                h = (1 - z) * n + z * h
            else:
                h = layer._act(gi + gh)
            h.retain_grad()
            hs.append(h)
        hs_all.append(hs)
        cs_all.append(cs)
        inputs = torch.stack(hs, 1)
    last = inputs if model.many_to_many else inputs[:, -1]
    return model.head(last), hs_all, cs_all


@pytest.mark.parametrize(
    ("kind", "activation", "layers", "many_to_many"),
    [
        ("lstm", "tanh", 2, False),
        ("lstm", "tanh", 1, True),
        ("lstm", "tanh", 3, True),
        ("lstm-layer", "tanh", 2, False),  # gradwatch's own LSTM layer: the norms from its backward
        ("lstm-layer", "tanh", 1, True),
        ("lstm-layer", "tanh", 3, True),
        ("gru", "tanh", 1, True),
        ("gru", "tanh", 2, False),
        ("rnn", "tanh", 2, False),
        ("rnn", "tanh", 1, True),
        ("rnn", "relu", 1, True),
        ("rnn", "relu", 2, False),
        ("rnn", "sigmoid", 2, False),  # the Python-loop fallback
        ("rnn", "gelu", 1, True),
        ("rnn", "identity", 1, False),  # a linear RNN: Pascanu et al. 2013 spectral-radius study
    ],
)
def test_timestep_gradients_are_the_true_hidden_state_gradients(kind: str, activation: str, layers: int, many_to_many: bool) -> None:
    native, own_layer = None, kind == "lstm-layer"
    if own_layer:
        kind, native = "lstm", native_module(torch.device("cpu"), torch.float32)
        assert native is not None, "the C++ probe loops did not build (g++, ninja and an AVX2 CPU are on this machine)"
    torch.manual_seed(0)
    model = RecurrentNet(kind, 3, 8, layers, 2, activation, many_to_many)
    if own_layer:
        model.use_kernel(native)
    x = torch.randn(4, 11, 3)
    target = torch.randn(4, 11, 2) if many_to_many else torch.randn(4, 2)
    recorded = timestep_indices(11, 5)
    taps = ForwardTaps(activation, 0.05, layers=True, timesteps=recorded, native=native)
    out = model(x, taps)
    ((out - target) ** 2).sum().backward()
    _, norms = taps.after_backward()
    assert norms is not None

    model.zero_grad()
    expected_out, hs, cs = reference(model, x)
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-6)
    ((expected_out - target) ** 2).sum().backward()
    expected = [float(hs[l][t].grad.norm()) for l in range(layers) for t in recorded]
    if kind == "lstm":
        expected += [float(cs[l][t].grad.norm()) for l in range(layers) for t in recorded]
    np.testing.assert_allclose(norms.detach().numpy(), expected, rtol=1e-4, atol=1e-7)


def test_taps_do_not_change_the_forward_pass() -> None:
    torch.manual_seed(0)
    model = RecurrentNet("lstm", 2, 6, 1, 1, "tanh", many_to_many=False)
    x = torch.randn(3, 20, 2)
    plain = model(x)
    tapped = model(x, ForwardTaps("tanh", 0.05, layers=True, timesteps=timestep_indices(20, 4)))
    torch.testing.assert_close(plain, tapped, rtol=1e-5, atol=1e-6)


def test_mlp_shapes_and_parameter_names() -> None:
    model = MLP(784, (30, 20), 10, "sigmoid")
    assert model(torch.zeros(5, 28, 28)).shape == (5, 10)
    assert [name for name, _ in model.named_parameters()] == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
        "head.weight",
        "head.bias",
    ]
    assert model.layer_names() == ["layers.0", "layers.1", "head"]


def test_build_model_rejects_an_mlp_for_many_to_many() -> None:
    with pytest.raises(ValueError, match="many-to-many"):
        build_model("mlp", (5, 3), 4, True, (10,), 8, 1, "tanh", 0.01)


FUNCTIONAL = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "elu": F.elu,
    "gelu": F.gelu,
    "softsign": F.softsign,
    "identity": lambda x: x,
}


@pytest.mark.parametrize("activation", sorted(FUNCTIONAL))
def test_every_activation_is_the_functional_one(activation: str) -> None:
    """Forward and backward of the MLP equal head(f(layer(x))) with torch.nn.functional's f."""
    torch.manual_seed(0)
    model = MLP(4, (5,), 3, activation)
    x = 3.0 * torch.randn(16, 4)  # wide enough to reach every function's non-linear part
    out = model(x)
    out.sum().backward()
    layer, head = model.layers[0], model.head
    weight = layer.weight.detach().clone().requires_grad_(True)
    expected = F.linear(FUNCTIONAL[activation](F.linear(x, weight, layer.bias.detach())), head.weight.detach(), head.bias.detach())
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-6, atol=1e-6)
    assert all(p.grad is not None for p in model.parameters())


def test_timestep_indices_keep_first_and_last() -> None:
    assert list(timestep_indices(5, 16)) == [0, 1, 2, 3, 4]
    chosen = timestep_indices(784, 16)
    assert chosen[0] == 0 and chosen[-1] == 783 and len(chosen) == 16
