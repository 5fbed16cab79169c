"""How many parameters a spec's network has, tensor by tensor.

The same tensors, in the same order, as `workers/engine/models.py` builds: an MLP's
`nn.Linear` layers (weight, bias) and head; a recurrent layer's `weight_ih` (G·H, D),
`weight_hh` (G·H, H), `bias_ih` and `bias_hh` (G·H), with G = 1 (Elman), 4 (LSTM: i, f, g,
o) or 3 (GRU: r, z, n), then the head.
"""

from __future__ import annotations

import math

from service.budgets.shape import GATES, RunShape


def parameter_sizes(shape: RunShape) -> list[int]:
    """Elements of each parameter tensor, input → output."""
    sizes: list[int] = []
    if shape.recurrent:
        gates, hidden = GATES[shape.kind], shape.hidden_size
        inputs = shape.sequence[1]
        for _ in range(shape.num_layers):
            sizes += [gates * hidden * inputs, gates * hidden * hidden, gates * hidden, gates * hidden]
            inputs = hidden
        last = hidden
    else:
        widths = (shape.features, *shape.hidden_sizes)
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            sizes += [fan_in * fan_out, fan_out]
        last = widths[-1]
    return sizes + [last * shape.outputs, shape.outputs]


def parameter_count(shape: RunShape) -> int:
    return sum(parameter_sizes(shape))


def flat_buffer_rows(sizes: list[int]) -> tuple[int, int]:
    """(rows, row width) of the engine's flat parameter buffer (`FlatParameters` in
    workers/engine/probes.py): the widest row ≤ 1024 that pads by at most 1/8, each
    tensor starting on a row of its own."""
    total = sum(sizes)
    width = 1024
    while width > 32 and sum(math.ceil(n / width) * width for n in sizes) > total * 1.125:
        width //= 2
    return sum(max(1, math.ceil(n / width)) for n in sizes), width
