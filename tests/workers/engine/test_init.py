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


FAN_IN, FAN_OUT = 400, 300  # one 300×400 weight: enough entries for each statistic within 3 %
TANH_GAIN = 5.0 / 3.0  # torch.nn.init.calculate_gain("tanh"), used by the kaiming schemes


def _uniform_bound(weight: torch.Tensor) -> float:
    return float(weight.abs().max())


@pytest.mark.parametrize(
    ("scheme", "std", "bound"),
    [
        # U(-b, b) has std b/√3. The bound is the config's (0.05).
        ("uniform", 0.05 / math.sqrt(3), 0.05),
        # Glorot & Bengio 2010: std = gain·√(2/(fan_in+fan_out)).
        ("xavier_normal", math.sqrt(2 / (FAN_IN + FAN_OUT)), None),
        # He et al. 2015 (fan_in mode): bound = gain·√(3/fan_in), std = gain/√fan_in.
        ("kaiming_uniform", TANH_GAIN / math.sqrt(FAN_IN), TANH_GAIN * math.sqrt(3 / FAN_IN)),
        ("kaiming_normal", TANH_GAIN / math.sqrt(FAN_IN), None),
    ],
)
def test_each_scheme_draws_its_own_distribution(scheme: str, std: float, bound: float | None) -> None:
    model = MLP(FAN_IN, (FAN_OUT,), 10, "tanh")
    torch.manual_seed(0)
    initialize(model, InitConfig(scheme=scheme), "tanh")
    weight = model.layers[0].weight.detach()
    assert float(weight.mean()) == pytest.approx(0.0, abs=0.02 * std)
    assert float(weight.std()) == pytest.approx(std, rel=0.03)
    if bound is None:
        # A normal draw of 120,000 values reaches well past 3 std.
        assert _uniform_bound(weight) > 4 * std
    else:
        assert 0.99 * bound < _uniform_bound(weight) <= bound
    assert torch.equal(model.layers[0].bias.detach(), torch.zeros(FAN_OUT))


def test_orthogonal_weights_are_orthogonal_and_every_scheme_reaches_every_gate() -> None:
    model = MLP(FAN_OUT, (FAN_OUT,), 10, "tanh")
    initialize(model, InitConfig(scheme="orthogonal"), "tanh")
    weight = model.layers[0].weight.detach()
    torch.testing.assert_close(weight @ weight.t(), torch.eye(FAN_OUT), atol=1e-4, rtol=0)

    gru = RecurrentNet("gru", 3, 16, 2, 2, "tanh", False)
    initialize(gru, InitConfig(scheme="uniform", bound=0.01), "tanh")
    for name, parameter in gru.named_parameters():
        if "weight" in name:
            # PyTorch's default draws U(±1/√16) = ±0.25; the scheme's bound is 0.01.
            assert 0.005 < _uniform_bound(parameter.detach()) <= 0.01, name
        else:
            assert torch.equal(parameter.detach(), torch.zeros_like(parameter)), name


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
