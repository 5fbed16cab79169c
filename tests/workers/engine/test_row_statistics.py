"""The compiled and the C++ row statistics, and the C++ gate statistics, equal the plain-PyTorch
path, and the derived ‖Δw‖ of plain SGD equals the measured one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.engine import ClippingConfig, DatasetConfig, ModelConfig, ProbeConfig, RunConfig, TrainingConfig
from workers.engine.models import MLP
from workers.engine.probes import DerivedUpdate, FlatParameters, ForwardTaps, ParameterProbe
from workers.engine.row_statistics import COMPILED, NATIVE, STATISTICS, RowStatistics, native_module, plain_row_statistics

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


@pytest.fixture(scope="module")
def native():
    """The C++ loop, built (or loaded) for this process; this machine has g++ and an AVX2 CPU."""
    assert NATIVE.start().wait(COMPILE_TIMEOUT_S), "building the C++ row statistics took over 10 minutes"
    assert NATIVE.module is not None, "the C++ row statistics did not build (g++ and ninja are on this machine)"
    assert NATIVE.module.accelerated(), "this CPU lacks AVX2/FMA: the C++ loop cannot serve here"
    return NATIVE.module


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("rows", "width"), [(5, 64), (17, 1024), (90, 256), (3, 40)])
def test_the_cpp_loop_equals_the_plain_path(native, rows: int, width: int, dtype: torch.dtype) -> None:
    block, weight = buffers(rows, width, seed=rows + width)
    block, weight = block.to(dtype), weight.to(dtype)
    plain = torch.full((STATISTICS, rows), -7.0, dtype=dtype)
    plain_row_statistics(block, weight, plain, product=True)
    looped = torch.full((STATISTICS, rows), -7.0, dtype=dtype)
    native.row_statistics([block[0].contiguous()], weight, looped, True)
    tolerance = {"rtol": 2e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(looped, plain, equal_nan=True, **tolerance)
    # The NaN and infinity rows keep their NaN / Inf, the finite counts are exact.
    assert looped[3, 1] == width - 2 and looped[3, 0] == width - 1
    assert torch.isnan(looped[4, 0]) and torch.isnan(looped[4, 2]) and looped[4, 1] == math.inf
    # Without ⟨g, w⟩ asked for, its row is left as it was, as the plain path leaves it.
    untouched = torch.full((STATISTICS, rows), -7.0, dtype=dtype)
    native.row_statistics([block[0].contiguous()], weight, untouched, False)
    assert torch.all(untouched[6] == -7.0)
    torch.testing.assert_close(untouched[:6], plain[:6], equal_nan=True, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cpp_loop_reads_each_gradient_where_autograd_left_it(native, dtype: torch.dtype) -> None:
    """Gradients of their own (not views of a buffer), of sizes that leave the last row of each
    tensor partly empty, one spanning several rows, with NaN and ±Inf: the C++ loop over them
    equals the plain path over their flat copy, the padding counted as finite zeros."""
    generator = torch.Generator().manual_seed(5)
    shapes = [(37, 29), (300,), (1,), (64, 64), (7, 3, 5)]
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)) for shape in shapes]
    flat = FlatParameters(params, scratch=True)
    assert flat.rows > len(params) and any(p.numel() % flat.width for p in params)
    grads = [torch.randn(shape, generator=generator, dtype=dtype) * 10.0 ** (k - 2) for k, shape in enumerate(shapes)]
    grads[0][3, 4], grads[1][-1], grads[3][63, 0], grads[4][6, 2, 4] = math.nan, math.inf, -math.inf, -math.nan
    plain = torch.full((STATISTICS, flat.rows), -7.0, dtype=dtype)
    RowStatistics(flat, fused=False, native=False)(plain, grads, product=True)
    looped = torch.full((STATISTICS, flat.rows), -7.0, dtype=dtype)
    RowStatistics(flat, fused=False)(looped, grads, product=True)
    tolerance = {"rtol": 2e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(looped, plain, equal_nan=True, **tolerance)
    assert torch.equal(looped[3], plain[3])  # the finite counts (padding included) are exact
    assert int(looped[3].sum()) == flat.rows * flat.width - 4


def test_the_cpp_loop_refuses_what_it_cannot_read(native) -> None:
    grad, weight = torch.zeros(4, 64), torch.zeros(4, 64)
    with pytest.raises(RuntimeError, match="contiguous"):
        native.row_statistics([grad.t()], weight, torch.zeros(7, 4), True)
    with pytest.raises(RuntimeError, match="contiguous"):
        native.row_statistics([grad], weight.t(), torch.zeros(7, 64), True)
    with pytest.raises(RuntimeError, match="out"):
        native.row_statistics([grad], weight, torch.zeros(6, 4), True)
    with pytest.raises(RuntimeError, match="dtype"):
        native.row_statistics([grad], weight.double(), torch.zeros(7, 4), True)
    with pytest.raises(RuntimeError, match="rows"):  # gradients that do not cover the buffer's rows
        native.row_statistics([grad[:3]], weight, torch.zeros(7, 4), True)


def test_a_run_keeps_the_path_it_started_with(native) -> None:
    """The C++ loop serves a CPU run from its first step (it waited for the build) and the
    plain path one that asked for it; both record the same statistics within float rounding."""
    flat = FlatParameters([torch.nn.Parameter(torch.zeros(9, 128))], scratch=True)
    assert RowStatistics(flat, fused=False).path == "native"
    assert RowStatistics(flat, fused=False, native=False).path == "plain"
    assert native_module(torch.device("meta"), torch.float32) is None  # only CPU buffers

    def config(use_native: bool) -> RunConfig:
        return RunConfig(
            model=ModelConfig(kind="mlp", hidden_sizes=(16, 16), activation="sigmoid"),
            dataset=DatasetConfig(name="digits"),
            training=TrainingConfig(steps=10, batch_size=16, optimizer="sgd", lr=0.5),
            probes=ProbeConfig(layers=False, native=use_native),
        )

    _, looped = run(config(True))
    _, plain = run(config(False))
    for metric in ("grad_norm", "grad_mean_abs", "grad_std", "grad_max_abs", "weight_norm", "update_ratio"):
        for layer in ("layers.0.weight", "layers.1.bias", "head.weight"):
            np.testing.assert_allclose(series(looped, metric, layer), series(plain, metric, layer), rtol=1e-4, atol=1e-9)


def test_the_cpp_gate_statistics_equal_the_plain_path(native) -> None:
    # Pre-activations over σ's whole range and beyond its clamps, the bounds' own neighbours, NaN.
    generator = torch.Generator().manual_seed(11)
    size, blocks = 24, 4
    pre = torch.randn(3 * 64 + 5, blocks * size, generator=generator) * 10.0 ** torch.randint(-2, 3, (1, blocks * size), generator=generator)
    bounds = torch.tensor([4.36, 4.36, 2.09, 4.36])
    inverse = bounds.repeat_interleave(size).reciprocal()
    pre[0, :8] = torch.tensor([200.0, -200.0, 88.5, -87.5, 0.0, -0.0, math.inf, -math.inf])
    pre[1, : 3 * size : size] = torch.nextafter(bounds[:3], torch.tensor(math.inf))  # just beyond: counted
    pre[2, : 3 * size : size] = bounds[:3]  # on the bound: not counted
    sums, saturated = native.gate_statistics(pre, inverse)
    torch.testing.assert_close(sums, torch.sigmoid(pre.double()).sum(0), rtol=2e-6, atol=1e-5)
    assert torch.equal(saturated, torch.gt(pre.abs() * inverse, 1.0).float().sum(0))
    pre[3, 5] = math.nan
    sums, saturated = native.gate_statistics(pre, inverse)
    assert torch.isnan(sums[5]) and not torch.isnan(sums[4]) and saturated[5] == torch.gt(pre[:, 5].abs() * inverse[5], 1.0).sum()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_recurrent_run_records_the_same_gates_with_the_cpp_loop(native, kind: str) -> None:
    def config(use_native: bool) -> RunConfig:
        return RunConfig(
            model=ModelConfig(kind=kind, hidden_size=16, num_layers=2),
            dataset=DatasetConfig(name="adding", seq_len=12, num_train=128, num_test=16),
            training=TrainingConfig(steps=6, batch_size=32, optimizer="adam", lr=0.01),
            probes=ProbeConfig(native=use_native),
        )

    _, looped = run(config(True))
    _, plain = run(config(False))
    gates = ["gate_forget", "gate_input_saturation", "act_saturation"] if kind == "lstm" else ["gate_update", "gate_reset_saturation"]
    for metric in gates:
        for layer in ("layers.0", "layers.1"):
            want = series(plain, metric, layer)
            assert np.all(np.isfinite(want))
            np.testing.assert_allclose(series(looped, metric, layer), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "gelu"])
def test_an_mlp_run_records_the_same_layers_with_the_cpp_loop(native, activation: str) -> None:
    def config(use_native: bool) -> RunConfig:
        return RunConfig(
            model=ModelConfig(kind="mlp", hidden_sizes=(24, 16), activation=activation),
            dataset=DatasetConfig(name="digits"),
            training=TrainingConfig(steps=8, batch_size=16, optimizer="sgd", lr=0.5),
            probes=ProbeConfig(native=use_native),
        )

    # The same raw keys in the same order (a checkpoint keeps them as its layer keys, and a run
    # resumed in a process without the loop must read its columns the same way), equal values.
    # Widths on and off the loop's 8 float lanes (24, 16 and 27, 13: a scalar tail); a batch with
    # a non-finite example (its NaN row must count every unit alive, as torch.amax's NaN does).
    torch.manual_seed(0)
    for widths, poisoned in (((24, 16), False), ((27, 13), False), ((27, 13), True)):
        model, x = MLP(20, widths, 3, activation), torch.randn(16, 20) * 3
        if poisoned:
            x[5, 2] = float("nan")
        raw = {}
        for use_native in (True, False):
            taps = ForwardTaps(activation, 0.05, layers=True, timesteps=None, native=native if use_native else None)
            model.zero_grad()
            model(x, taps).logsumexp(1).sum().backward()
            raw[use_native] = taps.after_backward()[0], taps.keys
        assert raw[True][1] == raw[False][1] and len(raw[True][1]) >= 9
        torch.testing.assert_close(raw[True][0], raw[False][0], rtol=1e-5, atol=1e-6, equal_nan=True)

    _, looped = run(config(True))
    _, plain = run(config(False))
    extra = {"sigmoid": ["act_saturation"], "relu": ["act_dead"], "gelu": []}[activation]
    for metric in ["act_mean", "act_std", "backprop_norm", *extra]:
        for layer in ("layers.0", "layers.1"):
            want = series(plain, metric, layer)
            assert np.all(np.isfinite(want))
            np.testing.assert_allclose(series(looped, metric, layer), want, rtol=1e-5, atol=1e-7)


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
    flat.clear_grads()
    model(torch.randn(16, 300)).logsumexp(1).mean().mul(50.0).backward()
    grads = flat.grads()
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    for probe, row in rows.items():
        probe.gradients(probe.views(row), grads)
    measured.before_update()
    torch._foreach_mul_(grads, torch.clamp(max_norm / total, max=1.0))  # clip_by_norm_
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
