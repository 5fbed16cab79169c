from __future__ import annotations

import math

import pytest
import torch

from workers.engine.config import InitConfig
from workers.engine.init import initialize, spectral_radius
from workers.engine.models import MLP, RecurrentNet


def test_xavier_uniform_bounds_and_zero_biases() -> None:
    model = MLP(784, (30,), 10, "sigmoid")
    initialize(model, InitConfig(scheme="xavier_uniform"), "sigmoid")
    bound = math.sqrt(6 / (784 + 30))
    assert float(model.layers[0].weight.detach().abs().max()) <= bound
    assert float(model.layers[0].weight.detach().abs().max()) > 0.9 * bound
    assert float(model.layers[0].bias.detach().abs().max()) == 0.0 and float(model.head.bias.detach().abs().max()) == 0.0


def test_normal_std() -> None:
    model = MLP(784, (100,), 10, "relu")
    torch.manual_seed(0)
    initialize(model, InitConfig(scheme="normal", std=1.0), "relu")
    assert float(model.layers[0].weight.detach().std()) == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("scheme", ["uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"])
def test_every_scheme_runs(scheme: str) -> None:
    model = RecurrentNet("gru", 3, 16, 2, 2, "tanh", False)
    initialize(model, InitConfig(scheme=scheme), "tanh")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_orthogonal_recurrent_blocks() -> None:
    model = RecurrentNet("lstm", 3, 16, 1, 1, "tanh", False)
    initialize(model, InitConfig(scheme="xavier_uniform", recurrent_scheme="orthogonal"), "tanh")
    for gate in range(4):
        block = model.layers[0].weight_hh[gate * 16 : (gate + 1) * 16].detach()
        torch.testing.assert_close(block @ block.t(), torch.eye(16), atol=1e-5, rtol=0)


def test_irnn_identity_and_spectral_radius() -> None:
    model = RecurrentNet("rnn", 2, 12, 1, 1, "relu", False)
    initialize(model, InitConfig(recurrent_scheme="identity"), "relu")
    assert torch.equal(model.layers[0].weight_hh.detach(), torch.eye(12))
    initialize(model, InitConfig(scheme="normal", std=0.3, spectral_radius=1.1), "tanh")
    assert spectral_radius(model.layers[0].weight_hh) == pytest.approx(1.1, rel=1e-5)


def test_lstm_forget_bias() -> None:
    model = RecurrentNet("lstm", 2, 8, 1, 1, "tanh", False)
    initialize(model, InitConfig(scheme="xavier_uniform", forget_bias=2.0), "tanh")
    layer = model.layers[0]
    total = (layer.bias_ih + layer.bias_hh).detach()
    assert torch.equal(total[8:16], torch.full((8,), 2.0))
    assert torch.equal(total[:8], torch.zeros(8))
    model = RecurrentNet("lstm", 2, 8, 1, 1, "tanh", False)
    initialize(model, InitConfig(), "tanh")  # PyTorch's default, with the forget bias of 1
    total = (model.layers[0].bias_ih + model.layers[0].bias_hh).detach()
    assert torch.equal(total[8:16], torch.ones(8))
