"""Sharpness: power iteration on Hessian-vector products against the explicit Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from workers.engine import DatasetConfig, ModelConfig, ProbeConfig, RunConfig, TrainingConfig
from workers.engine.config import CurvatureConfig
from workers.engine.curvature import curvature_subset, hutchinson_trace, top_eigenvalue
from workers.engine.datasets import load_dataset
from workers.engine.losses import compute_loss, resolve_loss
from workers.engine.trainer import make_model

from .helpers import run


def explicit_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """(N, N) float64: the full Hessian of the batch loss in the flattened parameters."""
    names, params = zip(*[(n, p.detach().double()) for n, p in model.named_parameters()])
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    model = model.double()

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, sizes)
        weights = {n: piece.view(shape) for n, piece, shape in zip(names, pieces, shapes)}
        return compute_loss(functional_call(model, weights, (x.double(),)), y, "classification", loss)

    flat = torch.cat([p.reshape(-1) for p in params])
    return torch.autograd.functional.hessian(loss_of, flat)


def small_run(loss: str, every: int = 4, trace_samples: int = 0) -> RunConfig:
    return RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(6,), activation="tanh"),
        dataset=DatasetConfig(name="digits", limit=200),
        training=TrainingConfig(steps=9, batch_size=None, optimizer="sgd", lr=0.05, loss=loss),
        curvature=CurvatureConfig(every=every, iterations=100, batch=64, trace_samples=trace_samples),
        probes=ProbeConfig(flush_every=3),
        seed=3,
    )


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_power_iteration_agrees_with_the_explicit_hessian_within_one_percent(loss: str) -> None:
    config = small_run(loss)
    data = load_dataset(config.dataset)
    model = make_model(config, data)  # the weights of step 0, where the first measurement is taken
    subset = curvature_subset(data.train_x.shape[0], config.curvature.batch, config.seed)
    eigenvalues = torch.linalg.eigvalsh(explicit_hessian(make_model(config, data), data.train_x[subset], data.train_y[subset], loss))
    top = float(eigenvalues[eigenvalues.abs().argmax()])
    assert top > 0

    result, batches = run(config)
    assert result.status == "succeeded"
    measured = {}
    for batch in batches:
        if ("hessian_max_eig", None) in batch.sparse_values:
            steps, values = batch.sparse_values[("hessian_max_eig", None)]
            assert steps.dtype == np.int64 and np.all(steps <= batch.steps[-1])
            measured.update(zip(steps.tolist(), values.tolist()))
    assert sorted(measured) == [0, 4, 8]  # every `every` steps, each handed out once
    assert measured[0] == pytest.approx(top, rel=0.01)
    assert ("hessian_trace", None) not in batches[0].sparse_values  # no trace asked for
    del model


def test_hutchinson_trace_estimates_the_explicit_trace() -> None:
    config = small_run("cross_entropy")
    data = load_dataset(config.dataset)
    model = make_model(config, data)
    x, y = data.train_x[:64], data.train_y[:64]
    exact = float(torch.trace(explicit_hessian(make_model(config, data), x, y, "cross_entropy")))
    params = list(model.parameters())
    gradients = list(torch.autograd.grad(compute_loss(model(x), y, "classification"), params, create_graph=True))
    estimate = float(hutchinson_trace(gradients, params, 2000, torch.Generator().manual_seed(0)))
    assert estimate == pytest.approx(exact, rel=0.05)
    # Warm-started power iteration: from the eigenvector itself, one step is enough.
    eigenvalue, vector = top_eigenvalue(gradients, params, [torch.randn_like(p) for p in params], 100)
    again, _ = top_eigenvalue(gradients, params, vector, 1)
    assert float(again) == pytest.approx(float(eigenvalue), rel=1e-3)


def test_the_trace_series_is_handed_out_when_asked_for() -> None:
    _, batches = run(small_run("cross_entropy", every=3, trace_samples=4))
    steps = np.concatenate([b.sparse_values[("hessian_trace", None)][0] for b in batches if b.sparse_values])
    assert steps.tolist() == [0, 3, 6]


def test_square_loss_is_half_the_squared_distance_to_one_hot() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])
    expected = 0.5 * ((1.0**2 + 1.0**2 + 0.5**2) + (0.0 + 1.0**2 + 2.0**2)) / 2
    assert float(compute_loss(logits, labels, "classification", "mse")) == pytest.approx(expected)
    assert resolve_loss(None, "classification") == "cross_entropy"
    assert resolve_loss(None, "regression") == "mse"
    with pytest.raises(ValueError, match="training.loss"):
        resolve_loss("cross_entropy", "regression")
