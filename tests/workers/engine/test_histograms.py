"""Distributions: exact counts, equal to NumPy's histogram of the same values; saturation shows."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.engine import DatasetConfig, InitConfig, ModelConfig, ProbeConfig, RunConfig, TrainingConfig
from workers.engine.activations import saturation_bound
from workers.engine.datasets import load_dataset
from workers.engine.histograms import (
    ABOVE,
    ACTIVATION_EDGES,
    BELOW,
    BINS,
    GRADIENT_EDGES,
    LINEAR_COLUMNS,
    NONFINITE,
    ZERO,
    HistogramProbe,
    element_offsets,
    LogMagnitudeColumns,
    grouped_value_counts,
    log_magnitude_counts,
    value_counts,
)
from workers.engine import histogram_native
from workers.engine.histogram_native import KERNEL
from workers.engine.probes import FlatParameters
from workers.engine.records import HistogramBatch
from workers.engine.trainer import compute_loss, make_model

from .helpers import run, series


def mlp(activation: str, histogram_every: int = 1, steps: int = 4, **init: object) -> RunConfig:
    return RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=(16, 16), activation=activation),
        init=InitConfig(**init),  # type: ignore[arg-type]
        dataset=DatasetConfig(name="digits", limit=300),
        training=TrainingConfig(steps=steps, batch_size=None, optimizer="sgd", lr=0.1),
        probes=ProbeConfig(flush_every=2, histogram_every=histogram_every),
        seed=1,
    )


def histograms(batches: list) -> HistogramBatch:
    parts = [b.histograms for b in batches if b.histograms is not None]
    return HistogramBatch(
        steps=np.concatenate([p.steps for p in parts]),
        keys=parts[0].keys,
        counts=np.concatenate([p.counts for p in parts]),
        edges=parts[0].edges,
    )


def numpy_columns(values: np.ndarray, edges: np.ndarray, log_magnitude: bool) -> np.ndarray:
    """The B + 4 columns computed independently with np.histogram."""
    finite = values[np.isfinite(values)]
    nonzero = finite[finite != 0]
    scale = np.log10(np.abs(nonzero)) if log_magnitude else nonzero
    inside, _ = np.histogram(scale[(scale >= edges[0]) & (scale < edges[-1])], bins=edges)
    return np.concatenate([
        [finite.size - nonzero.size, np.sum(scale < edges[0])], inside, [np.sum(scale >= edges[-1]), values.size - finite.size]
    ])


def test_gradient_histograms_equal_numpys_of_the_same_gradients_and_sum_to_each_size() -> None:
    config = mlp("tanh")
    data = load_dataset(config.dataset)
    model = make_model(config, data)  # step 0's weights, and full batch: step 0's exact gradient
    loss = compute_loss(model(data.train_x), data.train_y, data.task)
    loss.backward()
    expected = {name: p.grad.double().numpy().ravel() for name, p in model.named_parameters()}

    _, batches = run(config)
    table = histograms(batches)
    assert table.steps.tolist() == [0, 1, 2, 3]
    assert table.counts.shape[1:] == (len(table.keys), BINS + 4)
    np.testing.assert_array_equal(table.edges["grad_log10_abs"], GRADIENT_EDGES)
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    for row, (metric, layer) in enumerate(table.keys):
        if metric == "grad_log10_abs":
            assert (table.counts[:, row].sum(axis=1) == sizes[layer]).all()
            # The engine bins float32 gradients; NumPy bins the same values in float64.
            np.testing.assert_array_equal(table.counts[0, row], numpy_columns(expected[layer], GRADIENT_EDGES, True))
    assert {layer for metric, layer in table.keys if metric == "grad_log10_abs"} == set(sizes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zeros_and_non_finite_values_are_counted_exactly(dtype: torch.dtype) -> None:
    tiny, huge = torch.finfo(dtype).tiny * torch.finfo(dtype).eps, torch.finfo(dtype).max  # the extremes of the dtype
    values = torch.tensor([0.0, -0.0, 1e-20, tiny, 3e-5, -2.0, 5e5, huge, math.nan, math.inf, -math.inf, 1e-3], dtype=dtype)
    counts = log_magnitude_counts(values, None, 1, LogMagnitudeColumns(dtype))[0].numpy()
    assert counts[ZERO] == 2 and counts[NONFINITE] == 3 and counts[BELOW] == 2 and counts[ABOVE] == 2
    assert counts.sum() == values.numel()
    np.testing.assert_array_equal(counts, numpy_columns(values.double().numpy(), GRADIENT_EDGES, True))

    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(4000, generator=generator, dtype=dtype) * 5
    activations[:11] = torch.tensor([0.0, math.nan, math.inf, -math.inf, -8.0, 8.0, 7.999, -0.0, tiny, huge, -huge], dtype=dtype)
    counts = value_counts(activations).numpy()
    np.testing.assert_array_equal(counts, numpy_columns(activations.double().numpy(), ACTIVATION_EDGES, False))
    assert counts[ZERO] == 2 and counts[NONFINITE] == 3 and counts.sum() == 4000
    # Several groups in one pass (the dense layers of a step): each group's own histogram.
    groups = [activations[:1000], activations[1000:1500], activations[1500:]]
    offsets = element_offsets([len(g) for g in groups])
    grouped = grouped_value_counts(activations, offsets, 3).numpy()
    for row, group in zip(grouped, groups, strict=True):
        np.testing.assert_array_equal(row, numpy_columns(group.double().numpy(), ACTIVATION_EDGES, False))

    # Through the flat buffer, whose zero padding must not count as zero gradients.
    params = [torch.nn.Parameter(torch.zeros(3, 5)), torch.nn.Parameter(torch.zeros(7))]
    flat = FlatParameters(params, scratch=False)
    grads = [torch.tensor([[0.0, math.nan, 1.0, 2.0, math.inf]] * 3), torch.tensor([1e-13, 0.0, 0.0, 1e5, 1e-2, -1e-2, math.nan])]
    probe = HistogramProbe(["a", "b"], flat)
    probe.record(0, grads)
    batch = probe.take(0)
    assert batch is not None and batch.keys == (("grad_log10_abs", "a"), ("grad_log10_abs", "b"))
    first, second = batch.counts[0]
    assert first.sum() == 15 and first[ZERO] == 3 and first[NONFINITE] == 6
    assert second.sum() == 7 and second[ZERO] == 2 and second[NONFINITE] == 1 and second[BELOW] == 1 and second[ABOVE] == 1
    assert probe.take(0) is None  # handed out once


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_magnitudes_at_every_edge_and_across_the_range_fall_where_numpys_float64_puts_them(dtype: torch.dtype) -> None:
    # Every edge 10^e rounded to the dtype, and its neighbours one ulp either side: the values
    # a search for the threshold could get wrong by one.
    at = torch.tensor(10.0 ** GRADIENT_EDGES, dtype=torch.float64).to(dtype)
    neighbours = [at, torch.nextafter(at, torch.zeros_like(at)), torch.nextafter(at, torch.full_like(at, math.inf))]
    generator = torch.Generator().manual_seed(3)
    spread = torch.randn(20_000, generator=generator, dtype=torch.float64) * 10.0 ** (torch.rand(20_000, generator=generator, dtype=torch.float64) * 40 - 30)
    values = torch.cat([*neighbours, -at, spread.to(dtype)])
    counts = log_magnitude_counts(values, None, 1, LogMagnitudeColumns(dtype))[0].numpy()
    np.testing.assert_array_equal(counts, numpy_columns(values.double().numpy(), GRADIENT_EDGES, True))
    # Grouped through the lanes: each group's own histogram.
    sizes = [5, 700, values.numel() - 705]
    grouped = log_magnitude_counts(values, element_offsets(sizes), 3, LogMagnitudeColumns(dtype)).numpy()
    for row, group in zip(grouped, values.split(sizes), strict=True):
        np.testing.assert_array_equal(row, numpy_columns(group.double().numpy(), GRADIENT_EDGES, True))


def saturated_fraction(counts: np.ndarray, bound: float) -> tuple[float, float]:
    """Bounds on the fraction of pre-activations with |s| > bound, from whole bins."""
    centres = ACTIVATION_EDGES[:-1]
    inside = counts[2 : BINS + 2]
    surely = inside[(centres >= bound) | (ACTIVATION_EDGES[1:] <= -bound)].sum() + counts[BELOW] + counts[ABOVE]
    maybe = inside[(ACTIVATION_EDGES[1:] > bound) | (centres < -bound)].sum() + counts[BELOW] + counts[ABOVE]
    return surely / counts.sum(), maybe / counts.sum()


def test_a_sigmoid_nets_activations_saturate_where_a_relu_nets_do_not() -> None:
    # Large random weights (N(0, 4²)), where Glorot & Bengio 2010's sigmoid units sit at 0 and 1.
    _, sigmoid_batches = run(mlp("sigmoid", steps=1, scheme="normal", std=4.0))
    _, relu_batches = run(mlp("relu", steps=1, scheme="normal", std=4.0))
    sigmoid, relu = histograms(sigmoid_batches), histograms(relu_batches)
    bound = saturation_bound("sigmoid", 0.05)
    for layer in ("layers.0", "layers.1"):
        pre = sigmoid.counts[0, sigmoid.keys.index(("act_pre", layer))]
        low, high = saturated_fraction(pre, bound)
        # The histogram agrees with the engine's own saturation probe, measured independently.
        measured = float(series(sigmoid_batches, "act_saturation", layer)[0])
        assert low <= measured <= high and measured > 0.5
        out = sigmoid.counts[0, sigmoid.keys.index(("act_out", layer))]
        # Within ⅛ of σ's asymptotes: the bins [0, ⅛) and [⅞, 1), and 0 or 1 exactly.
        near_ends = out[ZERO] + out[2 + 64] + out[2 + 71] + out[2 + 72]
        assert near_ends > 0.75 * out.sum()
        assert out[BELOW] == out[ABOVE] == 0  # σ's range is [0, 1]

        relu_out = relu.counts[0, relu.keys.index(("act_out", layer))]
        # No asymptote to pile at: half the units are exactly zero, the rest spread far past 1.
        assert 0.3 < relu_out[ZERO] / relu_out.sum() < 0.7
        assert relu_out[2 + 64 + 8 :].sum() > 0.25 * relu_out.sum()


def test_histograms_every_nth_recorded_step_and_recurrent_layers() -> None:
    _, batches = run(mlp("tanh", histogram_every=3, steps=10))
    assert histograms(batches).steps.tolist() == [0, 3, 6, 9]
    config = RunConfig(
        model=ModelConfig(kind="lstm", hidden_size=8),
        dataset=DatasetConfig(name="adding", seq_len=12, num_train=64, num_test=16),
        training=TrainingConfig(steps=2, batch_size=32, optimizer="adam", lr=0.01),
        probes=ProbeConfig(histogram_every=1, max_timesteps=4),
    )
    _, batches = run(config)
    table = histograms(batches)
    row = table.keys.index(("act_out", "layers.0"))
    assert (table.counts[:, row].sum(axis=1) == 32 * 12 * 8).all()  # every timestep, across the pieces
    assert ("act_pre", "layers.0") not in table.keys


def test_histograms_are_off_by_default() -> None:
    _, batches = run(mlp("tanh", histogram_every=0))
    assert all(b.histograms is None for b in batches)


@pytest.mark.parametrize("edges", [GRADIENT_EDGES, ACTIVATION_EDGES])
def test_edges_are_exact_in_float32(edges: np.ndarray) -> None:
    assert np.array_equal(edges.astype(np.float32).astype(np.float64), edges)


@pytest.fixture(scope="module")
def kernel():
    """The C++ histogram loop, built (or loaded from the build cache) for this test process."""
    assert KERNEL.start().wait(600), "building the C++ histogram kernel took over 10 minutes"
    assert KERNEL.module is not None, "the C++ histogram kernel did not build (g++ and ninja are on this machine)"
    return KERNEL.module


def awkward_values(dtype: torch.dtype) -> torch.Tensor:
    """Every edge of both binnings with its neighbours, the dtype's extremes, zeros of both signs,
    NaN and ±Inf, and a wide spread of random magnitudes."""
    info = torch.finfo(dtype)
    edges = torch.tensor(np.concatenate([10.0**GRADIENT_EDGES, ACTIVATION_EDGES]), dtype=torch.float64).to(dtype)
    up, down = torch.nextafter(edges, torch.full_like(edges, math.inf)), torch.nextafter(edges, torch.full_like(edges, -math.inf))
    special = torch.tensor([0.0, -0.0, math.nan, math.inf, -math.inf, info.tiny, info.tiny * info.eps, info.max, -info.max], dtype=dtype)
    generator = torch.Generator().manual_seed(5)
    spread = torch.randn(30_000, generator=generator, dtype=torch.float64) * 10.0 ** (torch.rand(30_000, generator=generator, dtype=torch.float64) * 44 - 34)
    values = torch.cat([edges, up, down, -edges, -up, special, spread.to(dtype), torch.zeros(500, dtype=dtype)])
    return values[torch.randperm(values.numel(), generator=generator)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_cpp_loop_counts_exactly_what_the_pytorch_path_counts(kernel, dtype: torch.dtype) -> None:
    values = awkward_values(dtype)
    sizes = [1, 4_000, 0, values.numel() - 4_001]
    bounds = torch.tensor(np.cumsum([0, *sizes]), dtype=torch.int64)
    columns = LogMagnitudeColumns(dtype)
    native = kernel.log_magnitude_counts(values, bounds, columns.first_column, columns.next_start, columns.shift, BINS + 4)
    torch.testing.assert_close(native, log_magnitude_counts(values, element_offsets(sizes), len(sizes), columns), rtol=0, atol=0)
    np.testing.assert_array_equal(native[3].numpy(), numpy_columns(values[4_001:].double().numpy(), GRADIENT_EDGES, True))

    groups = list(values.split(sizes))
    native_values = kernel.value_counts(groups, *LINEAR_COLUMNS)
    torch.testing.assert_close(native_values, grouped_value_counts(values, element_offsets(sizes), len(sizes)), rtol=0, atol=0)
    for row, group in zip(native_values, groups, strict=True):
        np.testing.assert_array_equal(row.numpy(), numpy_columns(group.double().numpy(), ACTIVATION_EDGES, False))


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_a_run_histograms_the_same_with_the_cpp_loop_as_without_it(kernel, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run may switch to the C++ loop when its build finishes: no histogram may change.
    if kind == "mlp":
        config = mlp("sigmoid", steps=6)
    else:
        config = RunConfig(
            model=ModelConfig(kind="gru", hidden_size=8, num_layers=2),
            dataset=DatasetConfig(name="adding", seq_len=10, num_train=64, num_test=16),
            training=TrainingConfig(steps=4, batch_size=32, optimizer="adam", lr=0.01),
            probes=ProbeConfig(histogram_every=1, flush_every=2),
        )
    with_kernel = histograms(run(config)[1])
    monkeypatch.setattr(KERNEL, "ready", lambda: None)
    without = histograms(run(config)[1])
    assert with_kernel.keys == without.keys and len(with_kernel.keys) > 4
    np.testing.assert_array_equal(with_kernel.counts, without.counts)


def test_a_build_cut_off_by_its_process_exit_blocks_no_later_build(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A short-lived process starts the background build and exits in the middle of it, as a
    # worker's child that ran one small experiment may: the next process must still build.
    env = {**os.environ, "GRADWATCH_KERNEL_CACHE": str(tmp_path)}
    script = "import time; from workers.engine.histogram_native import KERNEL; KERNEL.start(); time.sleep(3)"
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120, cwd=Path(__file__).resolve().parents[3])
    monkeypatch.setenv("GRADWATCH_KERNEL_CACHE", str(tmp_path))
    assert list(histogram_native.cache_directory().glob("*.so")) == []  # it was cut off before finishing
    module = histogram_native.build()
    assert module.value_counts([torch.tensor([0.0, 1.0, math.nan])], *LINEAR_COLUMNS)[0].sum() == 3
    assert list(histogram_native.cache_directory().glob("*.so")) == [histogram_native.built_path()]
