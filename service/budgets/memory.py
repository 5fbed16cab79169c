"""The memory one run needs on its device, estimated from its spec.

An upper bound of the peak, built from what the engine allocates (float32 everywhere):
- the flat parameter buffer, the gradients autograd hands each parameter, the flat copy of
  them that the plain-PyTorch statistics and the histograms read (workers/engine/probes.py
  `FlatParameters`: weights (R, C), the copy with two scratch rows for |g| and finite flags
  (3, R, C), made only where those read it) and the parameter probe's two copies for ‖Δw‖:
  7 × the padded size at most;
- the optimiser's state (SGD 0, momentum 1×, RMSprop 1× (+1× with momentum), Adam/AdamW
  2× the parameters) and the temporaries its multi-tensor (foreach) step makes;
- the Recorder's device buffer (flush_every × (3 + 7R)) and its float64 host copies;
- the dataset tensors, train and held out, plus the shuffled copy of the training set a
  minibatch epoch makes (two at an epoch boundary: the old and the new), and while loading
  the loader's own temporaries (the generated tasks build float64 arrays first);
- the activations one recorded step keeps for backward (batch × sequence × width ×
  layers × what each layer kind keeps, `KEPT_PER_UNIT`), the probes' retained gradients,
  and the logits kept for accuracy until the next flush; and after training the
  evaluation's forward pass over 1,000 held-out examples at a time.

Checked against the peak resident memory of real runs in
tests/service/budgets/test_memory_measured.py; the factors below come from those
measurements (README, "Budgets").
"""

from __future__ import annotations

from dataclasses import dataclass

from service.budgets.parameters import flat_buffer_rows, parameter_sizes
from service.budgets.shape import RunShape

FLOAT = 4  # bytes of a float32
INDEX = 8  # bytes of an int64 label
EVAL_BATCH = 1_000  # workers/engine/trainer.py: held-out examples per forward pass
# Buffers per parameter: weights 1, gradients 1, their flat copy 3, probe copies 2.
FLAT_BUFFERS = 7
# Optimiser state, in parameter-sized tensors, and the temporaries of its foreach step
# (Adam's √v, RMSprop's √(E[g²]), Nesterov's g + μb, weight decay's g + λw).
OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2, "rmsprop": 1}
OPTIMIZER_TEMPORARIES = {"sgd": 0, "momentum": 0, "adam": 1, "adamw": 1, "rmsprop": 1}
# Floats one recorded training step holds per example, timestep and unit of a layer at
# its peak (during backward): what autograd saves for the layer's backward (LSTM: its
# 4 gates, the cell and its tanh; GRU: 3 gates, the recurrent candidate part and the
# update's operands; Elman RNN: its state; MLP: pre-activation and activation), the
# output and its retained gradient (the probes' ‖∂L/∂y‖), the gradient flowing back,
# and the probes' no-grad recomputation of the gates. (Measured when the timestep probes
# still cut the sequence into pieces; their recursion now runs after backward, once the
# saved tensors are freed, so the factors are an upper bound.) Measured on the CPU kernels (peak RSS growth less
# the ~200 MiB fixed part, over batch × T × H × 4 bytes): LSTM 22-34, GRU 26-31, RNN
# 7.4-8.1. The spread is the allocator's: a process that has already freed large blocks
# (a worker's pool process after its first run) has raised glibc's mmap threshold, so
# the per-timestep tensors come from a heap that fragments. The factors sit above the
# fragmented measurements.
KEPT_PER_UNIT = {"mlp": 6, "rnn": 12, "lstm": 36, "gru": 36}
# The same during evaluation (no_grad) over 1,000 examples: a layer's output, the next
# one's, and the kernel's precomputed input projections (measured: RNN 3.0-3.3, GRU 6).
EVAL_PER_UNIT = {"mlp": 3, "rnn": 4.5, "lstm": 8, "gru": 9}
# Extra bytes per loaded element (beyond the float32 kept) the loaders allocate while
# building the dataset: the generated tasks draw float64 arrays and stack them (adding:
# values, markers, their stack; copy and temporal order: int64 tokens), MNIST scales a
# float32 copy.
LOADING_EXTRA = {"adding": 16, "copy": 1, "temporal_order": 2, "mnist": 2, "sequential_mnist": 3}
# The framework's own working memory (oneDNN primitives and scratchpads, autograd's
# threads, allocator slack): the smallest runs (a 2×30 MLP on digits, a 16-unit LSTM)
# grow by 170-210 MiB on the CPU.
FIXED_OVERHEAD = 256 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int  # flat weights, gradients and probe copies
    optimizer: int
    probe_buffers: int
    dataset: int  # train + held out + shuffled copies
    loading: int  # the dataset while it is built (before the model exists)
    activations: int  # the larger of a training step's and the evaluation's
    overhead: int

    @property
    def total(self) -> int:
        steady = self.parameters + self.optimizer + self.probe_buffers + self.dataset + self.activations
        return max(self.loading, steady) + self.overhead

    def describe(self) -> str:
        parts = [
            ("parameters, gradients and probe copies", self.parameters),
            ("optimiser state", self.optimizer),
            ("probe buffers", self.probe_buffers),
            ("dataset tensors", self.dataset),
            ("activations kept for backward", self.activations),
        ]
        text = ", ".join(f"{name} {format_bytes(size)}" for name, size in parts if size)
        if self.loading >= self.total - self.overhead:
            text += f"; {format_bytes(self.loading)} while the dataset is built"
        return text


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def estimate_memory(shape: RunShape) -> MemoryEstimate:
    sizes = parameter_sizes(shape)
    count = sum(sizes)
    rows, width = flat_buffer_rows(sizes)
    parameters = FLAT_BUFFERS * rows * width * FLOAT
    optimizer = OPTIMIZER_STATE[shape.optimizer] + OPTIMIZER_TEMPORARIES[shape.optimizer]
    if shape.optimizer == "rmsprop" and shape.momentum:
        optimizer += 1  # the momentum buffer
    if shape.nesterov or (shape.weight_decay and shape.optimizer != "adamw"):
        optimizer += 1
    probe_width = 3 + 7 * rows  # workers/engine/trainer.py GLOBAL_COLUMNS + ParameterProbe.width
    # Device rows (float32), and on the host the pending float64 rows, their stack and the
    # per-tensor figures derived from it.
    probe_buffers = shape.flush_every * probe_width * (FLOAT + 3 * 8)
    steps, features = shape.sequence
    out_steps = steps if shape.many_to_many else 1
    logits = shape.batch * out_steps * shape.outputs * FLOAT
    probe_buffers += 2 * shape.flush_every * logits  # kept for accuracy, then stacked

    label = (INDEX * (steps if shape.many_to_many else 1)) if shape.classification else FLOAT
    example = steps * features * FLOAT + label
    train = shape.train_count * example
    dataset = train + shape.test_count * example
    if not shape.full_batch:
        dataset += 2 * train  # the shuffled copies of an epoch boundary (trainer.batches)
    loaded = (shape.train_count + shape.test_count) * steps * features
    loading = train + shape.test_count * example + loaded * LOADING_EXTRA.get(shape.dataset, 0)

    if shape.recurrent:
        units = steps * shape.hidden_size * shape.num_layers
        training = shape.batch * units * KEPT_PER_UNIT[shape.kind] * FLOAT
        evaluation = min(EVAL_BATCH, shape.test_count) * steps * shape.hidden_size * EVAL_PER_UNIT[shape.kind] * FLOAT
    else:
        units = sum(shape.hidden_sizes)
        training = shape.batch * units * KEPT_PER_UNIT["mlp"] * FLOAT
        evaluation = min(EVAL_BATCH, shape.test_count) * max(shape.hidden_sizes) * EVAL_PER_UNIT["mlp"] * FLOAT
    # The head: logits, their gradient and the softmax the loss keeps.
    training += 4 * logits
    return MemoryEstimate(
        parameters=parameters,
        optimizer=optimizer * count * FLOAT,
        probe_buffers=probe_buffers,
        dataset=dataset,
        loading=loading,
        activations=int(max(training, evaluation)),
        overhead=FIXED_OVERHEAD,
    )
