"""The compiled row statistics equal the plain-PyTorch path, and the derived ‖Δw‖ of plain SGD
equals the measured one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.engine import ClippingConfig, DatasetConfig, ModelConfig, ProbeConfig, RunConfig, TrainingConfig
from workers.engine.models import MLP
from workers.engine.probes import DerivedUpdate, FlatParameters, ParameterProbe
from workers.engine.row_statistics import COMPILED, STATISTICS, plain_row_statistics

from .helpers import run, series

COMPILE_TIMEOUT_S = 600  # a cold Inductor compile on a loaded 2-core machine


def buffers(rows: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (3, R, C) gradient block and an (R, C) weight buffer with NaN, ±Inf and zero padding."""
    generator = torch.Generator().manual_seed(seed)
    block = torch.zeros(3, rows, width)
    block[0] = torch.randn(rows, width, generator=generator) * 10.0 ** torch.randint(-4, 4, (rows, 1), generator=generator)
    weight = torch.randn(rows, width, generator=generator)
    block[0, :, width - width // 3 :] = 0.0  # padding at the end of every row, as FlatParameters leaves it
    weight[:, width - width // 3 :] = 0.0
    block[0, 0, 1] = math.nan
    block[0, 1, 2] = math.inf
    block[0, 1, 3] = -math.inf
    block[0, 2, 0] = -math.nan
    return block, weight


@pytest.mark.parametrize(("rows", "width"), [(5, 64), (17, 1024), (90, 256)])
def test_the_compiled_kernel_equals_the_plain_path(rows: int, width: int) -> None:
    block, weight = buffers(rows, width, seed=rows)
    ready = COMPILED.warm(block[0], weight)  # compiled once for all shapes (dynamic), in a thread
    assert ready.wait(COMPILE_TIMEOUT_S), "the row statistics did not compile"
    assert COMPILED.function is not None
    fused = COMPILED.function(block[0], weight)
    plain = torch.zeros(STATISTICS, rows)
    plain_row_statistics(block, weight, plain, product=True)
    assert fused.shape == (STATISTICS, rows)
    # NaN where the plain path has NaN, the same infinities, and the finite values within float32 rounding.
    torch.testing.assert_close(fused, plain, rtol=2e-5, atol=1e-6, equal_nan=True)
    assert plain[3, 1] == width - 2 and plain[3, 0] == width - 1  # the finite counts themselves
    assert torch.isnan(plain[4, 0]) and torch.isnan(plain[4, 2]) and plain[4, 1] == math.inf
    clean = ~torch.isnan(plain).any(0) & ~torch.isinf(plain).any(0)
    assert clean.sum() == rows - 3
    expected_norm = block[0, clean].double().norm(dim=1)
    np.testing.assert_allclose(fused[0, clean].double().numpy(), expected_norm.numpy(), rtol=1e-5)


def test_the_derived_sgd_update_equals_the_measured_one() -> None:
    """‖Δw‖ from lr, the clipping factor, ⟨g, w⟩ and the weight decay, against w_before − w_after."""
    torch.manual_seed(3)
    model = MLP(300, (7,), 2, "tanh")
    names, params = zip(*model.named_parameters())
    flat = FlatParameters(list(params), scratch=True)
    lr, decay, max_norm = 0.3, 0.05, 0.5
    derived = ParameterProbe(list(names), flat, DerivedUpdate(weight_decay=decay, max_norm=max_norm))
    measured = ParameterProbe(list(names), flat)
    rows = {probe: torch.zeros(probe.width) for probe in (derived, measured)}
    optimizer = torch.optim.SGD(params, lr=lr, weight_decay=decay)
    flat.zero_grad()
    model(torch.randn(16, 300)).logsumexp(1).mean().mul(50.0).backward()
    total = torch.linalg.vector_norm(flat.grad)
    for probe, row in rows.items():
        probe.gradients(probe.views(row))
    measured.before_update()
    torch.mul(flat.grad, torch.clamp(max_norm / total, max=1.0), out=flat.grad)  # clip_by_norm_
    optimizer.step()
    measured.after_update(measured.views(rows[measured]))
    assert float(total) > max_norm  # clipping took part
    lrs, norms = np.array([lr]), np.array([float(total)])
    got = derived.finish(rows[derived].double().numpy()[None], lrs, norms)
    want = measured.finish(rows[measured].double().numpy()[None])
    for name in names:
        np.testing.assert_allclose(got[("update_ratio", name)], want[("update_ratio", name)], rtol=1e-4)
        assert want[("update_ratio", name)][0] > 0


def test_a_run_derives_the_same_update_as_momentum_zero_measures() -> None:
    """Plain SGD (derived ‖Δw‖) and SGD with momentum 0 (measured) take identical steps."""

    def config(optimizer: str) -> RunConfig:
        return RunConfig(
            model=ModelConfig(kind="mlp", hidden_sizes=(16,), activation="tanh"),
            dataset=DatasetConfig(name="digits"),
            training=TrainingConfig(steps=12, batch_size=16, optimizer=optimizer, lr=0.5, momentum=0.0, weight_decay=0.01),
            clipping=ClippingConfig(mode="norm", max_norm=0.2),
            probes=ProbeConfig(fused=False),
        )

    _, derived = run(config("sgd"))
    _, measured = run(config("momentum"))
    for layer in ("layers.0.weight", "head.bias"):
        want = series(measured, "update_ratio", layer)
        assert np.all(want > 0)
        np.testing.assert_allclose(series(derived, "update_ratio", layer), want, rtol=1e-3)
