"""The training loop: `train(config, on_flush, should_stop) -> RunResult`.

One step: forward (with taps on recorded steps), loss, backward, probes on the raw gradients,
clipping, optimiser step, update sizes. Nothing in a step reads a device value on the host:
the losses and probe values stay on the device until the Recorder's sync, every
`probes.flush_every` training steps (or recorded steps, whichever comes first). A loss that
is not finite is found there, and the run ends `diverged` with everything recorded up to and
including that step handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from .clipping import clip_by_norm_, clip_by_value_, total_norm
from .config import RunConfig
from .datasets import TaskData, load_dataset
from .device import resolve_device
from .init import initialize
from .models import RecurrentNet, build_model
from .optim import learning_rate, make_optimizer, set_learning_rate
from .probes import ForwardTaps, ParameterProbe, parameter_order, timestep_indices
from .recorder import Recorder, Schema
from .records import ProbeBatch, RunResult

EVAL_BATCH = 1_000


def make_model(config: RunConfig, data: TaskData) -> torch.nn.Module:
    """The seeded, initialised network for `data`, on the CPU (identical on every device)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(
            config.model.kind,
            tuple(data.train_x.shape[1:]),
            data.num_outputs,
            data.many_to_many,
            config.model.hidden_sizes,
            config.model.hidden_size,
            config.model.num_layers,
            config.model.activation,
            config.model.negative_slope,
        )
        initialize(model, config.init, config.model.activation, config.model.negative_slope)
    return model


def batches(data: TaskData, batch_size: int | None, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless minibatches: a seeded shuffle per epoch, then contiguous slices (views)."""
    count = data.train_x.shape[0]
    if batch_size is None or batch_size >= count:  # full batch, as in the seed's notebook
        while True:
            yield data.train_x, data.train_y
    generator = torch.Generator().manual_seed(seed)
    device = data.train_x.device
    while True:
        order = torch.randperm(count, generator=generator).to(device)  # host → device, once per epoch
        x, y = data.train_x[order], data.train_y[order]
        for start in range(0, count - batch_size + 1, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]


def compute_loss(output: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    if task == "regression":
        return F.mse_loss(output.squeeze(-1), target)
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def compute_accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean(output.argmax(-1) == target, dtype=output.dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TaskData) -> tuple[float, float | None]:
    """Mean loss (and accuracy) on the held-out split."""
    count = data.test_x.shape[0]
    loss_sum = torch.zeros((), device=data.test_x.device, dtype=torch.float64)
    correct = torch.zeros((), device=data.test_x.device, dtype=torch.float64)
    for start in range(0, count, EVAL_BATCH):
        x, y = data.test_x[start : start + EVAL_BATCH], data.test_y[start : start + EVAL_BATCH]
        output = model(x)
        loss_sum += compute_loss(output, y, data.task).double() * x.shape[0]
        if data.task == "classification":
            correct += (output.argmax(-1) == y).double().mean() * x.shape[0]
    loss = float(loss_sum) / count  # sync: once, after training
    accuracy = float(correct) / count if data.task == "classification" else None  # sync
    return loss, accuracy


class _Finisher:
    """Turns the recorded raw columns into the published metrics, on the host."""

    def __init__(self, config: RunConfig, parameter_probe: ParameterProbe | None) -> None:
        self._clipping = config.clipping
        self._parameter_probe = parameter_probe

    def __call__(self, values: dict) -> dict:
        if self._parameter_probe is not None:
            self._parameter_probe.finish(values)
        clipping = self._clipping
        before = values[("grad_norm_total", None)]
        if clipping.mode == "norm":
            clipped = before > clipping.max_norm  # the test of Alg. 1, as the device applied it
        elif clipping.mode == "value":
            clipped = values[("_grad_max_abs_total", None)] > clipping.max_value
        else:
            clipped = np.zeros_like(before, dtype=bool)
        values[("clipped", None)] = clipped.astype(np.float64)
        return {key: value for key, value in values.items() if not key[0].startswith("_")}


def train(
    config: RunConfig,
    on_flush: Callable[[ProbeBatch], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Train as configured, handing probe records to `on_flush`; see docs/architecture.md."""
    config.validate()
    device = resolve_device(config.device)
    data = load_dataset(config.dataset).to(device)
    model = make_model(config, data).to(device)
    names, params = zip(*model.named_parameters())
    params = list(params)
    optimizer = make_optimizer(params, config.training)
    probes, clipping, training = config.probes, config.clipping, config.training
    recurrent = isinstance(model, RecurrentNet)

    parameter_probe = ParameterProbe(list(names), params) if probes.parameters else None
    timesteps = timestep_indices(data.train_x.shape[1], probes.max_timesteps) if recurrent and probes.timesteps else None
    activation = config.model.activation if (config.model.kind in ("mlp", "rnn")) else "tanh"
    recorder = Recorder(
        on_flush,
        probes.flush_every,
        parameter_order(model),
        _Finisher(config, parameter_probe),
        timesteps=timesteps,
        recurrent_layers=config.model.num_layers if recurrent else 0,
        has_cell=config.model.kind == "lstm",
    )
    classification = data.task == "classification"
    stream = batches(data, training.batch_size, config.seed)
    schema: Schema | None = None
    status, diverged_at, steps_done, recorded = "succeeded", None, 0, 0

    for step in range(training.steps):
        if should_stop():
            status = "cancelled"
            break
        lr = learning_rate(training, step)
        set_learning_rate(optimizer, lr)
        x, y = next(stream)
        logged = step % probes.log_every == 0 or step == training.steps - 1
        with_timesteps = logged and timesteps is not None and recorded % probes.timesteps_every == 0
        taps = None
        if logged and (probes.layers or with_timesteps):
            taps = ForwardTaps(
                activation, probes.saturation_threshold, probes.layers, timesteps if with_timesteps else None
            )
        output = model(x, taps)
        loss = compute_loss(output, y, data.task)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        recorder.loss(loss)
        grads = [p.grad for p in params]

        if not logged:
            if clipping.mode == "norm":
                clip_by_norm_(grads, clipping.max_norm, total_norm(list(torch._foreach_norm(grads))))
            elif clipping.mode == "value":
                clip_by_value_(grads, clipping.max_value)
            optimizer.step()
        else:
            norms = list(torch._foreach_norm(grads))
            before = total_norm(norms)
            scalars = [loss.detach()]
            keys: list[tuple[str, str | None]] = [("loss", None)]
            if classification:
                scalars.append(compute_accuracy(output.detach(), y))
                keys.append(("accuracy", None))
            vectors = parameter_probe.gradients(grads, norms) if parameter_probe is not None else []
            if clipping.mode == "value":
                scalars.append(torch.stack(torch._foreach_max(torch._foreach_abs(grads))).max())
                keys.append(("_grad_max_abs_total", None))
            after = before
            if clipping.mode == "norm":
                clip_by_norm_(grads, clipping.max_norm, before)
                after = total_norm(list(torch._foreach_norm(grads)))  # measured, not derived
            elif clipping.mode == "value":
                clip_by_value_(grads, clipping.max_value)
                after = total_norm(list(torch._foreach_norm(grads)))
            scalars += [before, after]
            keys += [("grad_norm_total", None), ("grad_norm_total_clipped", None)]
            if parameter_probe is not None:
                parameter_probe.before_update()
            optimizer.step()
            if parameter_probe is not None:
                vectors.append(parameter_probe.after_update())
            timestep_norms = None
            if taps is not None:
                layer_scalars, timestep_norms = taps.after_backward()
                scalars += layer_scalars
                keys += taps.scalar_keys
            if schema is None:
                schema = Schema(
                    scalar_keys=keys,
                    vector_keys=parameter_probe.vector_keys() if parameter_probe is not None else [],
                    host_keys=[("lr", None)],
                )
            recorder.record(step, schema, scalars, vectors, [lr])
            if timestep_norms is not None:
                recorder.record_timesteps(step, timestep_norms)
            recorded += 1
        steps_done = step + 1
        if steps_done % probes.flush_every == 0 or recorder.pending >= probes.flush_every:
            diverged_at = recorder.sync()
            if diverged_at is not None:
                break

    if diverged_at is None:
        diverged_at = recorder.sync(final=True)
    if diverged_at is not None:
        status, steps_done = "diverged", diverged_at + 1
    test_loss = test_accuracy = None
    if status == "succeeded":
        test_loss, test_accuracy = evaluate(model, data)
    return RunResult(
        status=status,
        steps_done=steps_done,
        final_loss=recorder.last_loss,
        final_accuracy=recorder.last_accuracy if classification else None,
        diverged_at_step=diverged_at,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
    )
