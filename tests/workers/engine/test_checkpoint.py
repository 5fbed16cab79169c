"""A run resumed from a checkpoint continues bit-identically (CPU) to an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest

from workers.engine import ClippingConfig, DatasetConfig, ModelConfig, ProbeBatch, ProbeConfig, RunConfig, TrainingConfig, train
from workers.engine.checkpoint import Checkpointing, from_bytes


def mlp_momentum() -> RunConfig:
    # Minibatches over several epochs (the data order matters), momentum state, a step schedule.
    return RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(16, 16), activation="tanh"),
        dataset=DatasetConfig(name="digits"),
        training=TrainingConfig(steps=120, batch_size=200, optimizer="momentum", lr=0.05, schedule="step", step_size=50),
        probes=ProbeConfig(log_every=3, flush_every=5),
        seed=3,
    )


def lstm_adam() -> RunConfig:
    return RunConfig(
        model=ModelConfig(kind="lstm", hidden_size=8),
        dataset=DatasetConfig(name="adding", seq_len=12, num_train=256, num_test=32),
        training=TrainingConfig(steps=60, batch_size=32, optimizer="adam", lr=0.01, schedule="cosine"),
        clipping=ClippingConfig(mode="norm", max_norm=0.5),
        probes=ProbeConfig(flush_every=5, timesteps_every=2),
        seed=7,
    )


def by_key(batches: list[ProbeBatch], from_step: int = 0) -> dict:
    """(metric, layer) → {step: value}, and the timesteps table by step, from `from_step` on."""
    values: dict = {}
    for batch in batches:
        for key, column in batch.values.items():
            for step, value in zip(batch.steps.tolist(), column.tolist()):
                if step >= from_step:
                    values.setdefault(key, {})[step] = value
        if batch.timesteps is not None:
            for step, row in zip(batch.timesteps.steps.tolist(), batch.timesteps.hidden_grad_norm):
                if step >= from_step:
                    values.setdefault(("timesteps", None), {})[step] = row.tobytes()
    return values


@pytest.mark.parametrize("make_config", [mlp_momentum, lstm_adam], ids=["mlp-momentum", "lstm-adam"])
def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_twin(make_config) -> None:
    saved: dict[int, bytes] = {}
    twin_batches: list[ProbeBatch] = []
    twin = train(make_config(), twin_batches.append, checkpointing=Checkpointing(every=20, save=saved.__setitem__))
    assert sorted(saved) == list(range(20, make_config().training.steps, 20))
    # Every recorded step before a checkpoint was handed out before it.
    handed_out = max(int(batch.steps[-1]) for batch in twin_batches if int(batch.steps[-1]) < 40)
    assert handed_out >= 40 - make_config().probes.log_every

    resumed_batches: list[ProbeBatch] = []
    resumed = train(
        make_config(), resumed_batches.append, checkpointing=Checkpointing(every=20, save=lambda *_: None, resume_from=saved[40])
    )
    assert int(resumed_batches[0].steps[0]) >= 40
    expected, got = by_key(twin_batches, 40), by_key(resumed_batches)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == expected[key] or all(
            (np.isnan(a) and np.isnan(b)) or a == b for a, b in zip(got[key].values(), expected[key].values())
        ), key
    assert (resumed.final_loss, resumed.test_loss, resumed.steps_done) == (twin.final_loss, twin.test_loss, twin.steps_done)


def test_checkpoints_do_not_change_the_run() -> None:
    plain: list[ProbeBatch] = []
    checkpointed: list[ProbeBatch] = []
    train(mlp_momentum(), plain.append)
    train(mlp_momentum(), checkpointed.append, checkpointing=Checkpointing(every=20, save=lambda *_: None))
    assert by_key(plain) == by_key(checkpointed)


def test_a_stop_that_asks_for_it_checkpoints_where_it_stopped() -> None:
    saved: dict[int, bytes] = {}
    calls = iter(range(10_000))
    result = train(
        mlp_momentum(),
        lambda batch: None,
        should_stop=lambda: next(calls) >= 33,
        checkpointing=Checkpointing(every=0, save=saved.__setitem__, on_stop=lambda: True),
    )
    assert result.status == "cancelled" and list(saved) == [33]
    assert from_bytes(saved[33]).step == 33
