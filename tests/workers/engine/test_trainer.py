"""The loop: determinism, flushing, divergence, cancellation, schedules, devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workers.engine import (
    ClippingConfig,
    DatasetConfig,
    InitConfig,
    ModelConfig,
    ProbeBatch,
    ProbeConfig,
    RunConfig,
    TrainingConfig,
    train,
)
from workers.engine.datasets import load_dataset
from workers.engine.device import resolve_device
from workers.engine.trainer import compute_loss, make_model

from .helpers import run, series, steps


def small_lstm(**probes: object) -> RunConfig:
    return RunConfig(
        model=ModelConfig(kind="lstm", hidden_size=8),
        dataset=DatasetConfig(name="adding", seq_len=12, num_train=256, num_test=32),
        training=TrainingConfig(steps=25, batch_size=32, optimizer="adam", lr=0.01, schedule="cosine"),
        clipping=ClippingConfig(mode="norm", max_norm=0.5),
        probes=ProbeConfig(**probes),  # type: ignore[arg-type]
        seed=7,
    )


def flatten(batches: list[ProbeBatch]) -> dict:
    out: dict = {"steps": steps(batches)}
    for key in batches[0].values:
        out[key] = series(batches, *key)
    timesteps = [b.timesteps for b in batches if b.timesteps is not None]
    out["hidden"] = np.concatenate([t.hidden_grad_norm for t in timesteps])
    out["cell"] = np.concatenate([t.cell_grad_norm for t in timesteps])
    return out


def test_same_config_and_seed_give_bit_identical_records() -> None:
    first_result, first = run(small_lstm())
    second_result, second = run(small_lstm())
    a, b = flatten(first), flatten(second)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))
    assert first_result == second_result


def test_a_different_seed_gives_different_records() -> None:
    _, first = run(small_lstm())
    config = small_lstm()
    config.seed = 8
    _, second = run(config)
    assert not np.array_equal(series(first, "loss"), series(second, "loss"))


def test_mlp_determinism(mnist_data_dir: Path) -> None:
    config = RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(20, 20), activation="relu"),
        init=InitConfig(scheme="kaiming_normal"),
        dataset=DatasetConfig(name="mnist", split="test", data_dir=str(mnist_data_dir), limit=1_000),
        training=TrainingConfig(steps=30, batch_size=50, optimizer="momentum", nesterov=True, weight_decay=1e-4),
        seed=2,
    )
    a, b = flatten_mlp(run(config)[1]), flatten_mlp(run(config)[1])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


def flatten_mlp(batches: list[ProbeBatch]) -> dict:
    return {key: series(batches, *key) for key in batches[0].values} | {"steps": steps(batches)}


def test_flushes_every_k_recorded_steps_and_a_final_partial_one() -> None:
    result, batches = run(small_lstm(flush_every=10, log_every=2))
    # steps 0, 2, …, 24 are recorded: 13 of them.
    assert [list(b.steps) for b in batches] == [list(range(0, 20, 2)), [20, 22, 24]]
    assert result.steps_done == 25


def test_the_last_step_is_always_recorded() -> None:
    _, batches = run(small_lstm(log_every=10))
    assert list(steps(batches)) == [0, 10, 20, 24]


def test_timesteps_every() -> None:
    _, batches = run(small_lstm(log_every=5, timesteps_every=2))
    timesteps = [b.timesteps for b in batches if b.timesteps is not None]
    assert list(np.concatenate([t.steps for t in timesteps])) == [0, 10, 20]


def test_probes_can_be_switched_off() -> None:
    _, batches = run(small_lstm(parameters=False, layers=False, timesteps=False))
    assert {key[0] for key in batches[0].values} == {"loss", "grad_norm_total", "grad_norm_total_clipped", "clipped", "lr"}
    assert batches[0].timesteps is None
    assert batches[0].layers == ()


def test_learning_rate_is_recorded_and_follows_the_schedule() -> None:
    _, batches = run(small_lstm())
    lr = series(batches, "lr")
    assert lr[0] == pytest.approx(0.01) and lr[-1] == pytest.approx(0.0, abs=1e-12)
    assert (np.diff(lr) <= 0).all()


def test_layers_are_ordered_input_to_output(mnist_data_dir: Path) -> None:
    config = RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(8, 8), activation="tanh"),
        dataset=DatasetConfig(name="digits"),
        training=TrainingConfig(steps=2),
    )
    _, batches = run(config)
    assert batches[0].layers == (
        "layers.0",
        "layers.0.weight",
        "layers.0.bias",
        "layers.1",
        "layers.1.weight",
        "layers.1.bias",
        "head",
        "head.weight",
        "head.bias",
    )
    layer_keys = {layer for _, layer in batches[0].values if layer is not None}
    assert layer_keys == set(batches[0].layers)


def diverging(lr: float = 1e4, steps: int = 200, flush_every: int = 20) -> RunConfig:
    return RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(32, 32), activation="relu"),
        init=InitConfig(scheme="normal", std=3.0),
        dataset=DatasetConfig(name="digits"),
        training=TrainingConfig(steps=steps, batch_size=64, lr=lr),
        probes=ProbeConfig(flush_every=flush_every, log_every=3),
    )


def test_divergence_stops_the_run_and_keeps_records_up_to_that_step() -> None:
    batches: list[ProbeBatch] = []
    result = train(diverging(), batches.append)
    assert result.status == "diverged"
    assert result.diverged_at_step is not None and result.steps_done == result.diverged_at_step + 1
    assert result.final_loss is not None and not np.isfinite(result.final_loss)
    assert result.test_loss is None
    recorded = steps(batches)
    assert recorded[-1] <= result.diverged_at_step
    assert np.isfinite(series(batches, "loss")[recorded < result.diverged_at_step]).all()


def test_divergence_is_found_between_recorded_steps() -> None:
    """log_every=3: the diverged step need not be a recorded one; every loss is checked."""
    result = train(diverging(), lambda batch: None)
    probe = RunConfig(**{**diverging().__dict__})
    probe.probes = ProbeConfig(log_every=1, flush_every=1)
    reference = train(probe, lambda batch: None)
    assert result.status == reference.status == "diverged"
    assert result.diverged_at_step == reference.diverged_at_step


def test_cancellation() -> None:
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    batches: list[ProbeBatch] = []
    result = train(small_lstm(), batches.append, should_stop)
    assert result.status == "cancelled" and result.steps_done == 7
    assert list(steps(batches)) == list(range(7))
    assert result.test_loss is None


def test_full_batch_uses_every_example_each_step(mnist_data_dir: Path) -> None:
    """The recorded loss of a full-batch step is the loss over the whole training split,
    measured independently on the same seeded model; a subset's loss is not."""
    config = RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(10,)),
        dataset=DatasetConfig(name="mnist", split="test", data_dir=str(mnist_data_dir), limit=300),
        training=TrainingConfig(steps=3, batch_size=None, lr=1e-9),
    )
    result, batches = run(config)
    loss = series(batches, "loss")
    data = load_dataset(config.dataset)
    assert data.train_x.shape[0] == 300
    model = make_model(config, data)
    with torch.no_grad():
        output = model(data.train_x)
        whole = float(compute_loss(output, data.train_y, data.task))
        whole_accuracy = float((output.argmax(-1) == data.train_y).double().mean())
        halves = [float(compute_loss(model(data.train_x[part]), data.train_y[part], data.task))
                  for part in (slice(0, 150), slice(150, 300))]
    # lr 1e-9: the weights barely move, so every step sees (almost) the step-0 model.
    for recorded in loss:
        assert recorded == pytest.approx(whole, rel=1e-5)
    for half in halves:
        assert abs(half - whole) > 1e-3 * whole, "a subset's loss must be told apart from the whole split's"
    # The global accuracy series: the fraction of the step's batch classified right.
    accuracy = series(batches, "accuracy")
    assert list(steps(batches)) == [0, 1, 2]
    assert accuracy[0] == pytest.approx(whole_accuracy, abs=1e-6)
    assert 0 < whole_accuracy < 1 and result.final_accuracy == pytest.approx(accuracy[-1])
    assert result.test_accuracy is not None and result.final_accuracy is not None


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_every_optimizer_and_schedule_reduce_the_loss(optimizer: str, schedule: str) -> None:
    lr = {"sgd": 0.5, "momentum": 0.1, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.01}[optimizer]
    config = RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(32,), activation="relu"),
        dataset=DatasetConfig(name="digits"),
        training=TrainingConfig(
            steps=60, batch_size=128, optimizer=optimizer, lr=lr, schedule=schedule, step_size=30, weight_decay=1e-4
        ),
        probes=ProbeConfig(parameters=False, layers=False),
    )
    result, batches = run(config)
    assert result.status == "succeeded"
    loss = series(batches, "loss")
    assert loss[-10:].mean() < 0.7 * loss[:5].mean()
    assert result.test_accuracy is not None and result.test_accuracy > 0.5


def test_value_clipping_records_clipped_steps() -> None:
    config = small_lstm()
    config.clipping = ClippingConfig(mode="value", max_value=1e-3)
    _, batches = run(config)
    assert series(batches, "clipped").all()
    assert (series(batches, "grad_max_abs", "layers.0.weight_hh") > 1e-3).all()


def test_validation_names_the_field() -> None:
    config = small_lstm()
    config.model.activation = "swish"
    with pytest.raises(ValueError, match="model.activation='swish'"):
        train(config, lambda batch: None)


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    # auto picks the GPU exactly when there is one.
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")
