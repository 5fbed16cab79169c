"""Every probe value against a direct computation in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.engine import DatasetConfig, InitConfig, ModelConfig, ProbeConfig, RunConfig, TrainingConfig
from workers.engine.activations import saturation_bound
from workers.engine.models import MLP
from workers.engine.probes import FlatParameters, ForwardTaps, ParameterProbe
from workers.engine.trainer import batches, compute_loss, make_model
from workers.engine.datasets import load_dataset

from .helpers import run, series


def test_parameter_statistics_match_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = MLP(6, (5,), 3, "tanh")
    names, params = zip(*model.named_parameters())
    flat = FlatParameters(list(params), scratch=True)
    probe = ParameterProbe(list(names), flat)
    row = torch.zeros(probe.width)
    views = probe.views(row)
    flat.clear_grads()
    model(torch.randn(8, 6)).pow(2).mean().backward()
    assert all(p.data_ptr() == flat.weight.view(-1)[int(s) * flat.width :].data_ptr() for p, s in zip(params, flat.row_starts))
    grads = flat.grads()
    assert all(g is p.grad for g, p in zip(grads, params))  # as autograd left them, not copies
    params[0].grad[0, 0] = float("nan")
    params[0].grad[1, 1] = float("inf")
    probe.gradients(views, grads)
    probe.before_update()
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.nan_to_num(p.grad, nan=0.0, posinf=1.0))
    probe.after_update(views)
    values = probe.finish(row.double().numpy()[None])
    for name, p, old in zip(names, params, before):
        g = p.grad.double()
        finite = bool(torch.isfinite(g).all())
        assert values[("grad_nonfinite", name)][0] == (~torch.isfinite(g)).sum()
        if finite:
            np.testing.assert_allclose(values[("grad_norm", name)], float(g.norm()), rtol=1e-5)
            np.testing.assert_allclose(values[("grad_mean_abs", name)], float(g.abs().mean()), rtol=1e-5)
            np.testing.assert_allclose(values[("grad_std", name)], float(g.std(correction=0)), rtol=1e-4)
            np.testing.assert_allclose(values[("grad_max_abs", name)], float(g.abs().max()), rtol=1e-6)
        else:
            assert not np.isfinite(values[("grad_norm", name)][0])
        w = old.double()
        np.testing.assert_allclose(values[("weight_norm", name)], float(w.norm()), rtol=1e-5)
        delta = (p.detach().double() - w).norm() / w.norm()
        np.testing.assert_allclose(values[("update_ratio", name)], float(delta), rtol=1e-4)
    assert values[("grad_nonfinite", "layers.0.weight")][0] == 2


def test_flat_parameters_span_several_rows_and_keep_the_padding_zero() -> None:
    """A tensor larger than a row, and one that leaves padding: sums over its rows are exact."""
    torch.manual_seed(1)
    model = MLP(300, (7,), 2, "relu")  # 2,100 weights: several rows, the last one padded
    names, params = zip(*model.named_parameters())
    original = [p.detach().clone() for p in params]
    flat = FlatParameters(list(params), scratch=True)
    assert flat.rows > len(params)
    for p, o in zip(params, original):
        assert torch.equal(p.detach(), o)  # same values, now views
    probe = ParameterProbe(list(names), flat)
    row = torch.zeros(probe.width)
    views = probe.views(row)
    optimizer = torch.optim.SGD(params, lr=0.1, weight_decay=0.1)
    for _ in range(2):
        flat.clear_grads()
        model(torch.randn(16, 300)).logsumexp(1).mean().backward()
        grads = flat.grads()
        flat.gather(grads)
        probe.gradients(views, grads)
        probe.before_update()
        optimizer.step()
        probe.after_update(views)
    padding = torch.ones(flat.weight.numel(), dtype=torch.bool)
    for p, start in zip(params, flat.row_starts):
        offset = int(start) * flat.width
        padding[offset : offset + p.numel()] = False
    assert not flat.weight.view(-1)[padding].any() and not flat.grad.view(-1)[padding].any()
    values = probe.finish(row.double().numpy()[None])
    for name, p in zip(names, params):
        g = p.grad.double()
        np.testing.assert_allclose(values[("grad_norm", name)], float(g.norm()), rtol=1e-5)
        np.testing.assert_allclose(values[("grad_mean_abs", name)], float(g.abs().mean()), rtol=1e-5)
        np.testing.assert_allclose(values[("grad_max_abs", name)], float(g.abs().max()), rtol=1e-6)
        assert values[("grad_nonfinite", name)][0] == 0


def test_layer_statistics_match_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = MLP(6, (50,), 3, "sigmoid")
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 3.0)  # large weights: some units saturate
    x = torch.randn(40, 6)
    taps = ForwardTaps("sigmoid", 0.05, layers=True, timesteps=None)
    model(x, taps).pow(2).sum().backward()
    got = published(taps)
    pre = model.layers[0](x).detach()
    act = torch.sigmoid(pre)
    derivative = act * (1 - act)
    assert got[("act_mean", "layers.0")] == pytest.approx(float(act.mean()), rel=1e-5)
    assert got[("act_std", "layers.0")] == pytest.approx(float(act.std(correction=0)), rel=1e-5)
    saturated = float((derivative < 0.05 * 0.25).double().mean())
    assert 0.05 < saturated < 0.95
    assert got[("act_saturation", "layers.0")] == pytest.approx(saturated, abs=1 / pre.numel() + 1e-9)
    # ∂L/∂s by hand: L = Σ out², out = head(σ(s)).
    out = model.head(act).detach()
    backprop = ((2 * out) @ model.head.weight.detach()) * derivative
    assert got[("backprop_norm", "layers.0")] == pytest.approx(float(backprop.norm()), rel=1e-4)
    assert got[("backprop_norm", "head")] == pytest.approx(float((2 * out).norm()), rel=1e-5)


def test_dead_relu_fraction() -> None:
    model = MLP(2, (4,), 1, "relu")
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
        model.layers[0].bias.zero_()
    taps = ForwardTaps("relu", 0.05, layers=True, timesteps=None)
    x = torch.tensor([[1.0, 1.0], [2.0, 3.0]])  # unit 1 is negative, unit 2 zero on every example
    model(x, taps).sum().backward()
    got = published(taps)
    assert got[("act_dead", "layers.0")] == 0.5


def published(taps: ForwardTaps) -> dict:
    """The layer statistics of one tapped step, as the trainer publishes them."""
    values, _ = taps.after_backward()
    assert values is not None
    raw = {key: np.array([value]) for key, value in zip(taps.keys, values.double().tolist())}
    taps.finish(raw)
    assert not any(metric.startswith("_") for metric, _ in raw)
    return {key: float(value[0]) for key, value in raw.items()}


def test_saturation_bounds() -> None:
    # tanh: f'(s) = 1 − tanh²(s) equals the threshold exactly at the bound.
    bound = saturation_bound("tanh", 0.05)
    assert 1 - math.tanh(bound) ** 2 == pytest.approx(0.05)
    bound = saturation_bound("sigmoid", 0.05)
    sigma = 1 / (1 + math.exp(-bound))
    assert sigma * (1 - sigma) == pytest.approx(0.05 * 0.25)
    bound = saturation_bound("softsign", 0.05)
    assert 1 / (1 + bound) ** 2 == pytest.approx(0.05)
    assert saturation_bound("relu", 0.05) is None


def test_lstm_run_records_gates_and_timesteps() -> None:
    config = RunConfig(
        model=ModelConfig(kind="lstm", hidden_size=8, num_layers=2),
        dataset=DatasetConfig(name="adding", seq_len=30, num_train=64, num_test=16),
        training=TrainingConfig(steps=4, batch_size=16, optimizer="adam", lr=0.01),
        probes=ProbeConfig(max_timesteps=7, flush_every=3),
    )
    result, batches = run(config)
    assert result.status == "succeeded"
    assert [len(b.steps) for b in batches] == [3, 1]
    for layer in ("layers.0", "layers.1"):
        for gate in ("input", "forget", "output"):
            mean = series(batches, f"gate_{gate}", layer)
            assert ((mean > 0) & (mean < 1)).all()
            saturated = series(batches, f"gate_{gate}_saturation", layer)
            assert ((saturated >= 0) & (saturated <= 1)).all()
        assert np.isfinite(series(batches, "backprop_norm", layer)).all()
    # forget bias 1: the forget gate starts above one half
    assert series(batches, "gate_forget", "layers.0")[0] > 0.6
    timesteps = batches[0].timesteps
    assert timesteps is not None
    assert list(timesteps.timesteps) == [0, 5, 10, 14, 19, 24, 29]
    assert timesteps.hidden_grad_norm.shape == (3, 2, 7)
    assert timesteps.cell_grad_norm is not None and timesteps.cell_grad_norm.shape == (3, 2, 7)
    assert (timesteps.hidden_grad_norm > 0).all()
    assert batches[0].layers == (
        "layers.0",
        "layers.0.weight_ih",
        "layers.0.weight_hh",
        "layers.0.bias_ih",
        "layers.0.bias_hh",
        "layers.1",
        "layers.1.weight_ih",
        "layers.1.weight_hh",
        "layers.1.bias_ih",
        "layers.1.bias_hh",
        "head",
        "head.weight",
        "head.bias",
    )


def test_gru_records_reset_and_update_gates() -> None:
    config = RunConfig(
        model=ModelConfig(kind="gru", hidden_size=8),
        dataset=DatasetConfig(name="copy", seq_len=5, num_train=32, num_test=8),
        training=TrainingConfig(steps=2, batch_size=16, optimizer="adam", lr=0.01),
    )
    result, batches = run(config)
    keys = set(batches[0].values)
    assert {("gate_reset", "layers.0"), ("gate_update_saturation", "layers.0")} <= keys
    assert batches[0].timesteps is not None and batches[0].timesteps.cell_grad_norm is None
    assert result.final_accuracy is not None


def test_training_batch_matches_the_model(mnist_data_dir) -> None:  # noqa: ANN001
    """The recorded step-0 loss is the loss of the first batch under the initial weights."""
    config = RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(16,), activation="relu"),
        init=InitConfig(scheme="kaiming_uniform"),
        dataset=DatasetConfig(name="mnist", split="test", data_dir=str(mnist_data_dir), limit=500),
        training=TrainingConfig(steps=1, batch_size=32),
        seed=3,
    )
    _, batches_ = run(config)
    data = load_dataset(config.dataset)
    model = make_model(config, data)
    x, y = next(batches(data, 32, 3))
    assert series(batches_, "loss")[0] == pytest.approx(float(compute_loss(model(x), y, "classification").detach()), rel=1e-6)
