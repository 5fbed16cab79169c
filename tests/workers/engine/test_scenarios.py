"""The issue's "Must show" results, reproduced through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.engine import ClippingConfig, DatasetConfig, InitConfig, ModelConfig, ProbeConfig, RunConfig, TrainingConfig

from .helpers import run, series


def seed_experiment(data_dir: Path, activation: str, hidden: tuple[int, ...]) -> float:
    """The seed's notebook: MNIST, full batch of 5,000 images, Xavier-uniform weights, zero
    biases, SGD lr 0.5. Returns mean |∂L/∂W| of the first layer over that of the output layer, at step 0."""
    config = RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=hidden, activation=activation),
        init=InitConfig(scheme="xavier_uniform", bias=0.0),
        dataset=DatasetConfig(name="mnist", split="test", data_dir=str(data_dir), limit=5_000),
        training=TrainingConfig(steps=1, batch_size=None, optimizer="sgd", lr=0.5),
    )
    result, batches = run(config)
    assert result.status == "succeeded"
    first = series(batches, "grad_mean_abs", "layers.0.weight")[0]
    output = series(batches, "grad_mean_abs", "head.weight")[0]
    return float(first / output)


def test_seed_experiment_sigmoid_vanishes(mnist_data_dir: Path) -> None:
    assert seed_experiment(mnist_data_dir, "sigmoid", (30, 30)) < 0.05


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_seed_experiment_tanh_and_relu_do_not(mnist_data_dir: Path, activation: str) -> None:
    assert seed_experiment(mnist_data_dir, activation, (30, 30)) > 0.25


def test_seed_experiment_four_sigmoid_layers(mnist_data_dir: Path) -> None:
    assert seed_experiment(mnist_data_dir, "sigmoid", (30, 30, 30, 30)) < 0.005


def exploding(data_dir: Path, clipping: str) -> RunConfig:
    # With N(0, 1) weights the loss reaches 1e19–1e32 within ten steps for every seed; whether
    # float32 then overflows, or all ReLUs die first (loss back at ln 10), depends on the draw:
    # seeds 1–4, 6 and 7 of 0–9 overflow. Seed 1 is one that does; the clipped run uses it too.
    return RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(100, 100, 100), activation="relu"),
        init=InitConfig(scheme="normal", std=1.0),
        dataset=DatasetConfig(name="mnist", split="test", data_dir=str(data_dir)),
        training=TrainingConfig(steps=300, batch_size=64, optimizer="sgd", lr=0.1),
        clipping=ClippingConfig(mode=clipping, max_norm=1.0),
        seed=1,
    )


def test_exploding_without_clipping_diverges(mnist_data_dir: Path) -> None:
    result, batches = run(exploding(mnist_data_dir, "none"))
    assert result.status == "diverged"
    assert result.diverged_at_step is not None and result.diverged_at_step < 20
    loss = series(batches, "loss")
    assert not np.isfinite(loss[-1]) and np.isfinite(loss[:-1]).all()
    assert batches[-1].steps[-1] == result.diverged_at_step  # kept up to and including it
    assert result.steps_done == result.diverged_at_step + 1


def test_exploding_with_norm_clipping_stays_finite(mnist_data_dir: Path) -> None:
    result, batches = run(exploding(mnist_data_dir, "norm"))
    assert result.status == "succeeded" and result.steps_done == 300
    assert np.isfinite(series(batches, "loss")).all() and len(series(batches, "loss")) == 300
    before = series(batches, "grad_norm_total")
    after = series(batches, "grad_norm_total_clipped")
    assert (after <= 1.0 + 1e-6).all()
    assert (before > 1.0).any()
    np.testing.assert_array_equal(series(batches, "clipped"), (before > 1.0).astype(float))


def adding(kind: str) -> RunConfig:
    return RunConfig(
        model=ModelConfig(kind=kind, hidden_size=64, activation="tanh"),
        dataset=DatasetConfig(name="adding", seq_len=50),
        training=TrainingConfig(steps=1_500, batch_size=64, optimizer="adam", lr=0.01),
        clipping=ClippingConfig(mode="norm", max_norm=1.0),
        probes=ProbeConfig(log_every=50),  # sparse records keep the test fast
    )


def through_time_ratio(batches: list, last_records: int = 5) -> float:
    """‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ after training: the median over the last recorded steps.

    Why a median: each record is one mini-batch, and a trained tanh RNN's ratio swings over
    orders of magnitude from batch to batch (1e-9 on most, now and then 1e-3 when its
    recurrent weights reach the edge of the exploding regime); the claim is about the
    trained network, not one batch.
    """
    through_time = [batch.timesteps for batch in batches if batch.timesteps is not None]
    assert through_time[-1].timesteps[0] == 0 and through_time[-1].timesteps[-1] == 49
    hidden = np.concatenate([record.hidden_grad_norm[:, 0] for record in through_time])  # (S, T')
    ratios = hidden[-last_records:, 0] / hidden[-last_records:, -1]
    return float(np.median(ratios))


@pytest.mark.slow
def test_lstm_solves_the_adding_problem_and_keeps_its_gradient() -> None:
    result, batches = run(adding("lstm"))
    assert result.status == "succeeded"
    assert result.test_loss is not None and result.test_loss < 0.01
    assert through_time_ratio(batches) > 1e-2


@pytest.mark.slow
def test_tanh_rnn_fails_the_adding_problem_and_its_gradient_vanishes() -> None:
    result, batches = run(adding("rnn"))
    assert result.status == "succeeded"
    assert result.test_loss is not None and result.test_loss > 0.1
    assert through_time_ratio(batches) < 1e-4
