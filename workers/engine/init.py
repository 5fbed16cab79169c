"""Weight initialisation schemes, applied after the model's own (PyTorch default) init.

Recurrent weight matrices stack one block per gate (PyTorch order: LSTM i, f, g, o; GRU r, z, n);
every scheme is applied block by block, so that fan-in/fan-out and orthogonality are those of
one gate's matrix, as in the papers. Call under a seeded RNG: everything here draws from
torch's global generator.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import kaiming_nonlinearity
from .config import InitConfig
from .models import MLP, RecurrentLayer, RecurrentNet


def _fill(weight: torch.Tensor, scheme: str, config: InitConfig, activation: str, slope: float) -> None:
    """Initialise one 2-D block in place."""
    if scheme == "normal":
        nn.init.normal_(weight, 0.0, config.std)
    elif scheme == "uniform":
        nn.init.uniform_(weight, -config.bound, config.bound)
    elif scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight, gain=config.gain)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight, gain=config.gain)
    elif scheme in ("kaiming_uniform", "kaiming_normal"):
        nonlinearity = kaiming_nonlinearity(activation)
        fill = nn.init.kaiming_uniform_ if scheme == "kaiming_uniform" else nn.init.kaiming_normal_
        fill(weight, a=slope if nonlinearity == "leaky_relu" else 0.0, nonlinearity=nonlinearity)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight, gain=config.gain)
    elif scheme == "identity":
        if weight.shape[0] != weight.shape[1]:
            raise ValueError(f"the identity init needs a square matrix, got {tuple(weight.shape)}")
        nn.init.eye_(weight)
    else:
        raise ValueError(f"unknown init scheme {scheme!r}")


def spectral_radius(matrix: torch.Tensor) -> float:
    """max |λ| of a square matrix (computed in float64 on the CPU: once, at init)."""
    # sync: the matrix comes to the host once, before training, for its eigenvalues.
    return float(torch.linalg.eigvals(matrix.detach().double().cpu()).abs().max())


def _rescale(block: torch.Tensor, radius: float) -> None:
    current = spectral_radius(block)
    if current == 0.0:
        raise ValueError("cannot rescale a hidden-to-hidden matrix with spectral radius 0 to a given radius")
    block.mul_(radius / current)


@torch.no_grad()
def initialize(model: nn.Module, config: InitConfig, activation: str, negative_slope: float = 0.01) -> None:
    """Apply `config` to a freshly built MLP or RecurrentNet."""
    if isinstance(model, MLP):
        if config.scheme != "default":
            for layer in model.layers:
                _fill(layer.weight, config.scheme, config, activation, negative_slope)
                layer.bias.fill_(config.bias)
            _fill(model.head.weight, config.scheme, config, "identity", negative_slope)
            model.head.bias.fill_(config.bias)
        return
    if not isinstance(model, RecurrentNet):
        raise TypeError(f"cannot initialise a {type(model).__name__}")
    for layer in model.layers:
        _initialize_recurrent(layer, config, negative_slope)
    if config.scheme != "default":
        _fill(model.head.weight, config.scheme, config, "identity", negative_slope)
        model.head.bias.fill_(config.bias)


def _initialize_recurrent(layer: RecurrentLayer, config: InitConfig, slope: float) -> None:
    size = layer.hidden_size
    gates = layer.weight_hh.shape[0] // size
    recurrent_scheme = config.recurrent_scheme or config.scheme
    for gate in range(gates):
        rows = slice(gate * size, (gate + 1) * size)
        if config.scheme != "default":
            _fill(layer.weight_ih[rows], config.scheme, config, layer.activation, slope)
        if recurrent_scheme != "default":
            _fill(layer.weight_hh[rows], recurrent_scheme, config, layer.activation, slope)
        if config.spectral_radius is not None:
            _rescale(layer.weight_hh[rows], config.spectral_radius)
    if config.scheme != "default":
        layer.bias_ih.fill_(config.bias)
        layer.bias_hh.fill_(config.bias)
    if layer.kind == "lstm" and config.forget_bias is not None:
        # The two biases add up; put the whole forget bias in one of them.
        layer.bias_ih[size : 2 * size] = config.forget_bias
        layer.bias_hh[size : 2 * size] = 0.0
