"""gradwatch's own LSTM layer (lstm_kernel.py / lstm_kernel.cpp) against PyTorch's.

The layer must be nn.LSTM to float tolerance — outputs, the final state, and the gradients of
the input, the initial state and every weight — and the statistics it takes inside its forward
and backward must equal the ones the plain path recomputes afterwards (through_time.py and
layer_taps.py), which test_models.py checks against a Python unroll."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.engine import DatasetConfig, ModelConfig, ProbeConfig, RunConfig, TrainingConfig
from workers.engine.config import CurvatureConfig
from workers.engine.lstm_kernel import LstmProbe, lstm, serves
from workers.engine.models import RecurrentNet
from workers.engine.probes import ForwardTaps, timestep_indices
from workers.engine.row_statistics import native_module

from .helpers import run, series


@pytest.fixture(scope="module")
def native():  # noqa: ANN201
    module = native_module(torch.device("cpu"), torch.float32)
    assert module is not None, "the C++ probe loops did not build (g++, ninja and an AVX2 CPU are on this machine)"
    return module


@pytest.mark.parametrize(("size", "steps", "inputs"), [(8, 1, 3), (8, 13, 3), (64, 50, 2), (32, 7, 40)])
def test_the_layer_is_nn_lstm(native, size: int, steps: int, inputs: int) -> None:  # noqa: ANN001
    """Random weights, input and a non-zero initial state; a loss on every output and on c_T.
    Both float32 layers are held to nn.LSTM in float64. The C++ layer sums in another order than
    oneDNN and forms tanh as 2σ(2x) − 1 (an absolute, not relative, float32 ulp near 0), so it is
    not bit-equal to PyTorch's float32 kernel: measured over seeds its error is 0.6–4.6× that
    kernel's (max), 0.6–3.3× (RMS). Held here to 8× and to 1e-5 of each tensor's scale; a wrong
    equation or index would be off by orders of magnitude more."""
    torch.manual_seed(size + steps)
    batch = 5
    leaves = [
        torch.randn(batch, steps, inputs),  # x
        torch.randn(1, batch, size),  # h0
        torch.randn(1, batch, size),  # c0
        torch.randn(4 * size, inputs) * 0.4,
        torch.randn(4 * size, size) * 0.4,
        torch.randn(4 * size) * 0.2,
        torch.randn(4 * size) * 0.2,
    ]
    up, across = torch.randn(batch, steps, size), torch.randn(1, batch, size)

    def outputs_and_gradients(dtype: torch.dtype, layer: str) -> list[torch.Tensor]:
        x, h0, c0, *weights = [leaf.to(dtype).requires_grad_() for leaf in leaves]
        if layer == "gradwatch":
            out, (h_last, c_last) = lstm(x, (h0, c0), weights, native)
        else:  # arguments after the weights: has_biases, num_layers, dropout, train, bidirectional, batch_first
            out, h_last, c_last = torch.lstm(x, (h0, c0), weights, True, 1, 0.0, True, False, True)
        loss = (out * up.to(dtype)).sum() + (c_last * across.to(dtype)).sum()
        return [t.detach() for t in [out, h_last, c_last, *torch.autograd.grad(loss, [x, h0, c0, *weights])]]

    exact = outputs_and_gradients(torch.float64, "pytorch")
    mine = outputs_and_gradients(torch.float32, "gradwatch")
    theirs = outputs_and_gradients(torch.float32, "pytorch")
    names = ["output", "h_T", "c_T", "∂L/∂x", "∂L/∂h0", "∂L/∂c0", "∂L/∂W_ih", "∂L/∂W_hh", "∂L/∂b_ih", "∂L/∂b_hh"]
    for name, reference, got, oracle in zip(names, exact, mine, theirs):
        error = float((got.double() - reference).abs().max())
        pytorch_error = float((oracle.double() - reference).abs().max())
        scale = float(reference.abs().max())
        floor = 2e-7 * scale  # a float32 ulp or so at the tensor's scale
        assert error <= 8 * pytorch_error + floor, f"{name}: error {error:.2e}, PyTorch's float32 kernel {pytorch_error:.2e}"
        assert error <= 1e-5 * scale, f"{name}: error {error:.2e} at scale {scale:.2e}"


@pytest.mark.parametrize(("layers", "size", "many_to_many"), [(1, 8, False), (2, 8, True), (2, 16, False), (1, 64, True)])
def test_probes_inside_the_layer_equal_the_recomputed_ones(native, layers: int, size: int, many_to_many: bool) -> None:  # noqa: ANN001
    """Every layer value (gate means and saturation, activation moments, backprop norms) and
    every recorded ‖∂L/∂h_t‖, ‖∂L/∂c_t‖, with the layer and without it, from the same weights."""
    torch.manual_seed(layers * size)
    model = RecurrentNet("lstm", 3, size, layers, 2, "tanh", many_to_many)
    # Larger weights than the default init so that some gates saturate and the counts are non-zero.
    with torch.no_grad():
        for layer in model.layers:
            layer.weight_ih.mul_(6.0)
    x = torch.randn(6, 17, 3)
    target = torch.randn(6, 17, 2) if many_to_many else torch.randn(6, 2)
    recorded = timestep_indices(17, 6)

    def probed(kernel: object | None) -> tuple[list[tuple[str, str]], torch.Tensor, torch.Tensor]:
        model.use_kernel(kernel)  # type: ignore[arg-type]
        model.zero_grad()
        taps = ForwardTaps("tanh", 0.05, layers=True, timesteps=recorded, native=native)
        ((model(x, taps) - target) ** 2).sum().backward()
        values, norms = taps.after_backward()
        assert values is not None and norms is not None
        return list(taps.keys), values, norms

    keys, values, norms = probed(native)
    plain_keys, plain_values, plain_norms = probed(None)
    assert keys == plain_keys
    saturated = [v for (metric, _), v in zip(keys, values.tolist()) if metric.startswith("_gate_saturated")]
    assert max(saturated) > 0, "the test should exercise the saturated counts"
    # Σσ of the candidate's pre-activation: the plain path sums it, no metric reads it (the
    # candidate is tanh; _finish_gates keeps only its saturation), and the layer sums tanh instead.
    read = [key[0] != "_gate_sum_candidate" for key in keys]
    np.testing.assert_allclose(values.numpy()[read], plain_values.numpy()[read], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(norms.numpy(), plain_norms.numpy(), rtol=1e-4, atol=1e-7)


def test_the_layer_serves_only_what_it_implements(native) -> None:  # noqa: ANN001
    x = torch.randn(2, 3, 4)
    assert serves(native, 8, x) and serves(native, 64, x)
    assert not serves(native, 6, x)  # H not a multiple of the 8 float lanes
    assert not serves(native, 8, x.double())
    assert not serves(None, 8, x)  # no C++ module: PyTorch's kernel


def test_a_second_backward_is_refused(native) -> None:  # noqa: ANN001
    """The backward overwrites the saved gates with ∂L/∂a: running it twice must fail loudly,
    not return wrong gradients."""
    torch.manual_seed(0)
    weights = [torch.randn(32, 3, requires_grad=True), torch.randn(32, 8, requires_grad=True), torch.zeros(32), torch.zeros(32)]
    state = (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))
    probe = LstmProbe(inverse_bounds=None)
    out, _ = lstm(torch.randn(2, 5, 3), state, weights, native, probe)
    assert probe.taken and probe.statistics is None and probe.elements == 2 * 5 * 8
    out.sum().backward(retain_graph=True)
    assert probe.norms is not None and probe.norms.shape == (2, 5)
    with pytest.raises(RuntimeError, match="runs backward once"):
        out.sum().backward()


def _adding_run(native: bool, curvature: int = 0) -> RunConfig:
    return RunConfig(
        model=ModelConfig(kind="lstm", hidden_size=16, num_layers=2),
        dataset=DatasetConfig(name="adding", seq_len=20, num_train=64, num_test=16),
        training=TrainingConfig(steps=6, batch_size=16, optimizer="adam", lr=0.01),
        probes=ProbeConfig(max_timesteps=5, flush_every=3, native=native),
        curvature=CurvatureConfig(every=curvature, iterations=10, batch=32),
        seed=5,
    )


def test_a_run_in_the_layer_records_what_the_plain_run_records() -> None:
    """A whole training run, the layer on (the default) and off: same loss, same probe series,
    same through-time norms, and the curvature probe (a double backward, which runs the model
    in PyTorch's kernel) still works."""
    result, batches = run(_adding_run(native=True, curvature=3))
    plain_result, plain_batches = run(_adding_run(native=False, curvature=3))
    assert result.status == plain_result.status == "succeeded"
    assert set(batches[0].values) == set(plain_batches[0].values)
    for metric, layer in batches[0].values:
        np.testing.assert_allclose(
            series(batches, metric, layer), series(plain_batches, metric, layer), rtol=2e-3, atol=1e-6, err_msg=f"{metric} {layer}"
        )
    for mine, plain in zip(batches, plain_batches):
        assert mine.timesteps is not None and plain.timesteps is not None
        np.testing.assert_allclose(mine.timesteps.hidden_grad_norm, plain.timesteps.hidden_grad_norm, rtol=2e-3, atol=1e-7)
        np.testing.assert_allclose(mine.timesteps.cell_grad_norm, plain.timesteps.cell_grad_norm, rtol=2e-3, atol=1e-7)
    def sharpness(batches: list) -> np.ndarray:  # noqa: ANN001
        return np.concatenate([b.sparse_values[("hessian_max_eig", None)][1] for b in batches if b.sparse_values])

    assert len(sharpness(batches)) == 2
    np.testing.assert_allclose(sharpness(batches), sharpness(plain_batches), rtol=1e-2)
