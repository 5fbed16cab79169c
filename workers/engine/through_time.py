"""‖∂L/∂h_t‖ and ‖∂L/∂c_t‖ of a recurrent layer that ran as one fused kernel.

The fused kernels (oneDNN, cuDNN) keep h_t and c_t inside, so autograd never holds them. What
it does hold is ∂L/∂y_t, the gradient arriving at the layer's output sequence from above (the
layer above or the head), retained on the output. The rest of ∂L/∂h_t is what flows back
through the recurrence, and it follows from the chain rule once the gates are known:

    ∂L/∂h_t = ∂L/∂y_t + W_hhᵀ ∂L/∂a_{t+1}          (a: the gate pre-activations)

(Werbos 1990, backpropagation through time; the LSTM and GRU gate derivatives are those of
PyTorch's nn.LSTM / nn.GRU equations). The gates are recomputed from the output sequence in one
batched GEMM pair (h_{t−1} is y_{t−1}), as the gate statistics do; every coefficient of the
recursion that does not depend on the gradient is formed for all timesteps at once; the loop
over timesteps is left with 2 (RNN), 3 (GRU) or 5 (LSTM) small kernels a step, written with
`out=` into preallocated (T, B, H) buffers. Exact up to float rounding: the tests compare it
with a plain Python unroll where every h_t is a tensor with its own .grad.

Cost: about one more backward pass of the recurrence, paid only on the steps that record
timesteps; the forward and the fused backward are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import RecurrentLayer


@dataclass
class Preactivations:
    """A layer's gate pre-activations over the whole sequence, time-major, (T·B, G·H).

    For a GRU the input and recurrent parts stay apart (its candidate multiplies the recurrent
    part by the reset gate): `from_input` and `from_state`; otherwise `summed` is their sum."""

    steps: int
    batch: int
    previous: torch.Tensor  # (T, B, H): h_{t−1}, zeros at t = 0
    summed: torch.Tensor | None = None
    from_input: torch.Tensor | None = None
    from_state: torch.Tensor | None = None


def preactivations(layer: RecurrentLayer, x: torch.Tensor, out: torch.Tensor) -> Preactivations:
    """x (B, T, D), out (B, T, H) → the pre-activations, from two GEMMs over every timestep."""
    batch, steps, _ = x.shape
    size = layer.hidden_size
    outputs = out.transpose(0, 1)  # (T, B, H)
    previous = torch.cat([outputs.new_zeros(1, batch, size), outputs[:-1]], 0)  # h_{t−1}
    inputs = x.transpose(0, 1).reshape(steps * batch, -1)  # (T·B, D)
    flat_previous = previous.view(steps * batch, size)
    if layer.kind == "gru":
        from_input = torch.addmm(layer.bias_ih, inputs, layer.weight_ih.t())
        from_state = torch.addmm(layer.bias_hh, flat_previous, layer.weight_hh.t())
        return Preactivations(steps, batch, previous, from_input=from_input, from_state=from_state)
    # W_ih x + b_ih + W_hh h_{t−1} + b_hh as two addmm, the second in place: no separate pass to
    # add them, and no copy of the (T·B, G·H) result that an out-of-place second addmm makes.
    summed = torch.addmm(layer.bias_ih + layer.bias_hh, inputs, layer.weight_ih.t())
    summed.addmm_(flat_previous, layer.weight_hh.t())
    return Preactivations(steps, batch, previous, summed=summed)


@torch.no_grad()
def state_gradients(
    layer: RecurrentLayer, pre: Preactivations, from_above: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The total ∂L/∂h_t, and ∂L/∂c_t for an LSTM, at every timestep: (T, B, H) each.

    `from_above` is ∂L/∂y (B, T, H), the retained gradient of the layer's output sequence."""
    above = from_above.transpose(0, 1).contiguous()  # (T, B, H): one contiguous slice per step
    if layer.kind == "lstm":
        return _lstm(layer, pre, above)
    if layer.kind == "gru":
        return _gru(layer, pre, above), None
    return _rnn(layer, pre, above), None


def _rnn(layer: RecurrentLayer, pre: Preactivations, above: torch.Tensor) -> torch.Tensor:
    """h_t = f(s_t): ∂L/∂s_t = ∂L/∂h_t ⊙ f′(s_t), ∂L/∂h_{t−1} = ∂L/∂y_{t−1} + W_hhᵀ ∂L/∂s_t."""
    steps, batch, size = pre.steps, pre.batch, layer.hidden_size
    assert pre.summed is not None
    # f′(s) for all timesteps in one batched backward of the layer's own activation function,
    # so every activation (fused tanh/relu, or the Python-loop ones) gets its exact derivative.
    with torch.enable_grad():
        s = pre.summed.detach().view(steps, batch, size).requires_grad_(True)
        activated = layer._act(s)
        (slope,) = torch.autograd.grad(activated, s, torch.ones_like(activated))
    hidden = torch.empty_like(above)
    into_state = torch.empty(batch, size, dtype=above.dtype, device=above.device)  # ∂L/∂s_{t+1}
    weight = layer.weight_hh  # (H, H)
    hidden[-1].copy_(above[-1])  # the last state is handed nowhere: only the output path
    # Per-timestep views made once by unbind (in C++), not by T Python indexings per tensor.
    hidden_t, slope_t, above_t = hidden.unbind(0), slope.unbind(0), above.unbind(0)
    for t in range(steps - 1, 0, -1):
        torch.mul(hidden_t[t], slope_t[t], out=into_state)
        torch.addmm(above_t[t - 1], into_state, weight, out=hidden_t[t - 1])
    return hidden


def _gru(layer: RecurrentLayer, pre: Preactivations, above: torch.Tensor) -> torch.Tensor:
    """PyTorch's GRU: r, z = σ(·), n = tanh(a_n + r ⊙ (W_hn h + b_hn)), h_t = (1 − z) n + z h_{t−1}.

    ∂L/∂h_{t−1} = ∂L/∂y_{t−1} + z_t ⊙ ∂L/∂h_t + W_hhᵀ (∂L/∂h_t ⊙ K_t), with K_t the three
    blocks ∂h_t/∂(W_hh h_{t−1} + b_hh) formed for all t at once:
    r: (1 − z)(1 − n²) ⊙ (W_hn h + b_hn) ⊙ r(1 − r);  z: (h_{t−1} − n) ⊙ z(1 − z);  n: (1 − z)(1 − n²) ⊙ r."""
    steps, batch, size = pre.steps, pre.batch, layer.hidden_size
    assert pre.from_input is not None and pre.from_state is not None
    from_input = pre.from_input.view(steps, batch, 3, size)
    from_state = pre.from_state.view(steps, batch, 3, size)
    gates = torch.sigmoid(from_input[:, :, :2] + from_state[:, :, :2])  # (T, B, 2, H): r, z
    reset, update = gates[:, :, 0], gates[:, :, 1]
    candidate = torch.tanh(torch.addcmul(from_input[:, :, 2], reset, from_state[:, :, 2]))
    through_candidate = (1.0 - update) * (1.0 - candidate * candidate)
    coefficients = torch.stack(
        [
            through_candidate * from_state[:, :, 2] * reset * (1.0 - reset),
            (pre.previous - candidate) * update * (1.0 - update),
            through_candidate * reset,
        ],
        2,
    )  # (T, B, 3, H)
    hidden = torch.empty_like(above)
    into_state = torch.empty(batch, 3, size, dtype=above.dtype, device=above.device)
    flat_into_state = into_state.view(batch, 3 * size)
    direct = torch.empty(batch, size, dtype=above.dtype, device=above.device)
    weight = layer.weight_hh  # (3H, H)
    hidden[-1].copy_(above[-1])
    hidden_t, above_t = hidden.unbind(0), above.unbind(0)
    coefficients_t, update_t = coefficients.unbind(0), update.unbind(0)
    for t in range(steps - 1, 0, -1):
        torch.mul(hidden_t[t].unsqueeze(1), coefficients_t[t], out=into_state)
        torch.addcmul(above_t[t - 1], hidden_t[t], update_t[t], out=direct)
        torch.addmm(direct, flat_into_state, weight, out=hidden_t[t - 1])
    return hidden


def _lstm(layer: RecurrentLayer, pre: Preactivations, above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's LSTM: i, f, o = σ(·), g = tanh(·), c_t = f c_{t−1} + i g, h_t = o tanh(c_t).

    ∂L/∂c_t = ∂L/∂h_t ⊙ o_t (1 − tanh² c_t) + ∂L/∂c_{t+1} ⊙ f_{t+1}, and the pre-activation
    gradient ∂L/∂a_t = (∂L/∂c_t ⊙ [g i(1−i), c_{t−1} f(1−f), i(1−g²)], ∂L/∂h_t ⊙ tanh(c_t) o(1−o))
    feeds ∂L/∂h_{t−1} through W_hhᵀ. The cell states are rebuilt by c_t = f c_{t−1} + i g, one
    kernel a step (h_t = o tanh c_t cannot be inverted stably where o is small)."""
    steps, batch, size = pre.steps, pre.batch, layer.hidden_size
    assert pre.summed is not None
    blocks = pre.summed.view(steps, batch, 4, size)
    sig = torch.sigmoid(blocks)  # i, f, (unused), o
    input_gate, forget_gate, output_gate = sig[:, :, 0], sig[:, :, 1], sig[:, :, 3]
    candidate = torch.tanh(blocks[:, :, 2])
    written = input_gate * candidate  # (T, B, H)
    cell = torch.empty_like(written)
    cell[0].copy_(written[0])
    cell_t, written_t, forget_t = cell.unbind(0), written.unbind(0), forget_gate.unbind(0)
    for t in range(1, steps):
        torch.addcmul(written_t[t], forget_t[t], cell_t[t - 1], out=cell_t[t])
    squashed = torch.tanh(cell)
    previous_cell = torch.cat([torch.zeros_like(cell[:1]), cell[:-1]], 0)
    into_cell = output_gate * (1.0 - squashed * squashed)  # ∂h_t/∂c_t
    from_cell = torch.stack(
        [
            candidate * input_gate * (1.0 - input_gate),
            previous_cell * forget_gate * (1.0 - forget_gate),
            input_gate * (1.0 - candidate * candidate),
        ],
        2,
    )  # (T, B, 3, H): ∂c_t/∂a_t for the i, f, g blocks
    from_hidden = squashed * output_gate * (1.0 - output_gate)  # ∂h_t/∂a_o
    hidden, cell_grad = torch.empty_like(above), torch.empty_like(above)
    into_gates = torch.empty(batch, 4, size, dtype=above.dtype, device=above.device)
    flat_gates = into_gates.view(batch, 4 * size)
    weight = layer.weight_hh  # (4H, H)
    hidden[-1].copy_(above[-1])
    torch.mul(hidden[-1], into_cell[-1], out=cell_grad[-1])
    hidden_t, cell_grad_t, above_t = hidden.unbind(0), cell_grad.unbind(0), above.unbind(0)
    from_cell_t, from_hidden_t, into_cell_t = from_cell.unbind(0), from_hidden.unbind(0), into_cell.unbind(0)
    cell_gates, output_gate_grad = into_gates[:, :3], into_gates[:, 3]
    for t in range(steps - 1, 0, -1):
        torch.mul(cell_grad_t[t].unsqueeze(1), from_cell_t[t], out=cell_gates)
        torch.mul(hidden_t[t], from_hidden_t[t], out=output_gate_grad)
        torch.addmm(above_t[t - 1], flat_gates, weight, out=hidden_t[t - 1])
        torch.mul(cell_grad_t[t], forget_t[t], out=cell_grad_t[t - 1])
        cell_grad_t[t - 1].addcmul_(hidden_t[t - 1], into_cell_t[t - 1])
    return hidden, cell_grad
