"""The training loop: `train(config, on_flush, should_stop) -> RunResult`.

One step: forward (with taps on recorded steps), loss, backward, probes on the raw gradients,
clipping, optimiser step, update sizes. Nothing in a step reads a device value on the host:
the losses and probe values stay on the device until the Recorder's sync, every
`probes.flush_every` training steps (or recorded steps, whichever comes first). A loss that
is not finite is found there, and the run ends `diverged` with everything recorded up to and
including that step handed out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from .batches import BatchStream
from .checkpoint import Checkpointing, RunState, capture_rng, from_bytes, restore_rng, to_bytes
from .clipping import clip_by_norm_, clip_by_value_, grad_norms, total_norm
from .config import RunConfig
from .baselines import trivial_baseline
from .curvature import CurvatureProbe, curvature_subset
from .datasets import TaskData, load_dataset
from .device import resolve_device
from .histograms import HistogramProbe
from .init import initialize
from .losses import compute_loss, resolve_loss
from .models import RecurrentNet, build_model
from .optim import learning_rate, make_optimizer, set_learning_rate
from .probes import DerivedUpdate, FlatParameters, ForwardTaps, ParameterProbe, parameter_order, timestep_indices
from .recorder import Recorder
from .row_statistics import native_module
from .records import ProbeBatch, RunResult
from .scheduled import attach

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


def batches(data: TaskData, batch_size: int | None, seed: int) -> BatchStream:
    """Endless minibatches: a seeded shuffle per epoch, then contiguous slices (views)."""
    return BatchStream(data, batch_size, seed)


def compute_accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean(output.argmax(-1) == target, dtype=output.dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TaskData, loss: str = "cross_entropy") -> tuple[float, float | None]:
    """Mean loss (and accuracy) on the held-out split."""
    count = data.test_x.shape[0]
    loss_sum = torch.zeros((), device=data.test_x.device, dtype=torch.float64)
    correct = torch.zeros((), device=data.test_x.device, dtype=torch.float64)
    for start in range(0, count, EVAL_BATCH):
        x, y = data.test_x[start : start + EVAL_BATCH], data.test_y[start : start + EVAL_BATCH]
        output = model(x)
        loss_sum += compute_loss(output, y, data.task, loss).double() * x.shape[0]
        if data.task == "classification":
            correct += (output.argmax(-1) == y).double().mean() * x.shape[0]
    loss = float(loss_sum) / count  # sync: once, after training
    accuracy = float(correct) / count if data.task == "classification" else None  # sync
    return loss, accuracy


def make_curvature_probe(config: RunConfig, model: torch.nn.Module, params: list, data: TaskData, loss: str) -> CurvatureProbe:
    """λ_max (and tr(H)) of the training loss on a fixed subset of the training set."""
    subset = curvature_subset(data.train_x.shape[0], config.curvature.batch, config.seed).to(data.train_x.device)
    x, y = data.train_x[subset], data.train_y[subset]  # one copy, kept for the whole run

    def loss_at() -> torch.Tensor:
        if isinstance(model, RecurrentNet):
            with model.plain_kernels():  # gradwatch's LSTM layer has no double backward
                return compute_loss(model(x), y, data.task, loss)
        return compute_loss(model(x), y, data.task, loss)

    cudnn = isinstance(model, RecurrentNet) and x.device.type == "cuda"
    return CurvatureProbe(config.curvature, params, loss_at, config.seed, cudnn)


class _Finisher:
    """Turns the raw columns of the recorded steps into the published metrics, on the host."""

    def __init__(self, config: RunConfig, parameter_probe: ParameterProbe | None, taps: ForwardTaps | None) -> None:
        self._clipping = config.clipping
        self._parameter_probe = parameter_probe
        self._taps = taps

    def __call__(self, vectors: np.ndarray, values: dict) -> dict:
        # Columns of every row: the total norm before and after clipping, max |g| over all
        # parameters (value clipping only), then the parameter probe's raw columns.
        before = vectors[:, 0]
        values[("grad_norm_total", None)] = before
        clipping = self._clipping
        if clipping.mode == "none":
            values[("grad_norm_total_clipped", None)] = before.copy()
            clipped = np.zeros_like(before, dtype=bool)
        else:
            values[("grad_norm_total_clipped", None)] = vectors[:, 1]
            if clipping.mode == "norm":
                clipped = before > clipping.max_norm  # the test of Alg. 1, as the device applied it
            else:
                clipped = vectors[:, 2] > clipping.max_value
        values[("clipped", None)] = clipped.astype(np.float64)
        if self._parameter_probe is not None:
            values.update(self._parameter_probe.finish(vectors[:, GLOBAL_COLUMNS:], values[("lr", None)], before))
        if self._taps is not None:
            self._taps.finish(values)
        return {key: value for key, value in values.items() if not key[0].startswith("_")}


GLOBAL_COLUMNS = 3  # grad_norm_total, grad_norm_total_clipped, max |g| (value clipping)


def derived_update(config: RunConfig) -> DerivedUpdate | None:
    """How ‖Δw‖ follows from the row statistics, where it does: plain SGD without value clipping
    (which changes g element by element, so the clipped gradient's statistics are not at hand)."""
    if config.training.optimizer != "sgd" or config.clipping.mode == "value":
        return None
    max_norm = config.clipping.max_norm if config.clipping.mode == "norm" else None
    return DerivedUpdate(weight_decay=config.training.weight_decay, max_norm=max_norm)


def train(
    config: RunConfig,
    on_flush: Callable[[ProbeBatch], None],
    should_stop: Callable[[], bool] = lambda: False,
    checkpointing: Checkpointing | None = None,
) -> RunResult:
    """Train as configured, handing probe records to `on_flush`; see docs/architecture.md.

    With `checkpointing`, a checkpoint is handed to its `save` every `every` steps, right
    after the flush of the steps before it (so a checkpoint never runs ahead of the stored
    points), and the run continues from `resume_from` when given (workers/engine/checkpoint.py)."""
    config.validate()
    device = resolve_device(config.device)
    loaded = load_dataset(config.dataset)
    # On the host, before the data moves to the device, scored with the run's own loss.
    baseline = trivial_baseline(loaded, resolve_loss(config.training.loss, loaded.task))
    data = loaded.to(device)
    model = make_model(config, data).to(device)
    names, params = zip(*model.named_parameters())
    params = list(params)
    probes, clipping, training = config.probes, config.clipping, config.training
    # The parameters become views of one flat buffer before the optimiser sees them.
    flat = FlatParameters(params, scratch=probes.parameters)
    optimizer = make_optimizer(params, config.training)
    recurrent = isinstance(model, RecurrentNet)
    if recurrent and config.model.kind == "lstm" and probes.native:
        # gradwatch's own LSTM layer, which probes from inside (lstm_kernel.py), for the whole run.
        model.use_kernel(native_module(device, flat.weight.dtype))
    loss_name = resolve_loss(training.loss, data.task)
    curvature = make_curvature_probe(config, model, params, data, loss_name) if config.curvature.every else None
    histograms = None
    if probes.histogram_every:
        histograms = HistogramProbe(list(names), flat)

    parameter_probe = ParameterProbe(list(names), flat, derived_update(config), probes.fused, probes.native) if probes.parameters else None
    timesteps = timestep_indices(data.train_x.shape[1], probes.max_timesteps) if recurrent and probes.timesteps else None
    activation = config.model.activation if (config.model.kind in ("mlp", "rnn")) else "tanh"
    taps = None
    if probes.layers or timesteps is not None:
        native = native_module(device, flat.weight.dtype) if probes.native else None
        taps = ForwardTaps(activation, probes.saturation_threshold, probes.layers, timesteps, native)
    classification = data.task == "classification"
    recorder = Recorder(
        attach(on_flush, curvature, histograms),
        probes.flush_every,
        parameter_order(model),
        _Finisher(config, parameter_probe, taps),
        GLOBAL_COLUMNS + (parameter_probe.width if parameter_probe is not None else 0),
        flat.weight,
        classification,
        timesteps=timesteps,
        recurrent_layers=config.model.num_layers if recurrent else 0,
        has_cell=config.model.kind == "lstm",
    )
    norm_clip, value_clip = clipping.mode == "norm", clipping.mode == "value"
    stream = batches(data, training.batch_size, config.seed)
    status, diverged_at, steps_done, recorded = "succeeded", None, 0, 0
    last_step = training.steps - 1
    checkpoint_every = checkpointing.every if checkpointing is not None else 0

    def take_checkpoint(steps_taken: int) -> None:
        assert checkpointing is not None
        state = RunState(
            step=steps_taken,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            data_order=stream.state(),
            recorder={**recorder.state(), "recorded": recorded},
            rng=capture_rng(),
        )
        checkpointing.save(steps_taken, to_bytes(state))

    if checkpointing is not None and checkpointing.resume_from is not None:
        resumed = from_bytes(checkpointing.resume_from)
        # In place: the parameters are views of the flat buffer, which must stay theirs.
        model.load_state_dict(resumed.model)
        optimizer.load_state_dict(resumed.optimizer)
        stream.load_state(resumed.data_order)
        recorder.load_state(resumed.recorder)
        recorded = int(resumed.recorder["recorded"])
        restore_rng(resumed.rng)
        steps_done = resumed.step

    for step in range(steps_done, training.steps):
        if should_stop():
            status = "cancelled"
            if checkpointing is not None and checkpointing.on_stop():
                # Hand out what is recorded first: the checkpoint must not run ahead of it.
                diverged_at = recorder.sync(final=True)
                if diverged_at is None:
                    take_checkpoint(step)
            break
        if curvature is not None and curvature.due(step):
            curvature.measure(step)  # at w_t, before this step's update
        lr = learning_rate(training, step)
        set_learning_rate(optimizer, lr)
        x, y = next(stream)
        logged = step % probes.log_every == 0 or step == last_step
        tapped = None
        if logged and taps is not None:
            with_timesteps = timesteps is not None and recorded % probes.timesteps_every == 0
            if probes.layers or with_timesteps:
                taps.start(with_timesteps)
                tapped = taps
        histogram_step = histograms is not None and logged and recorded % probes.histogram_every == 0
        output = model(x, histograms.taps(tapped) if histogram_step else tapped)
        loss = compute_loss(output, y, data.task, loss_name)
        flat.clear_grads()
        loss.backward()
        grads = flat.grads()
        recorder.loss(loss)
        if histogram_step:
            histograms.record(step, grads)  # the raw gradient, before clipping

        if not logged:
            if norm_clip:
                clip_by_norm_(grads, clipping.max_norm, total_norm(grad_norms(grads)))
            elif value_clip:
                clip_by_value_(grads, clipping.max_value)
            optimizer.step()
        else:
            row = recorder.row()  # (W,) on the device: every raw column of this step goes here
            layer_values = timestep_norms = None
            if tapped is not None:
                # Before the update: the through-time recursion recomputes the gates from the
                # weights, which must be the ones this step's forward and backward used.
                layer_values, timestep_norms = tapped.after_backward()
            before, after = row[0], row[1]
            if parameter_probe is not None:
                views = parameter_probe.views(row[GLOBAL_COLUMNS:])
                parameter_probe.gradients(views, grads)
                statistics = views[0]  # (7, R): row 0 the per-row norms, row 4 the per-row max |g|
                torch.linalg.vector_norm(statistics[0], out=before)
                if value_clip:
                    torch.amax(statistics[4], out=row[2])
            else:
                torch.linalg.vector_norm(torch.stack(grad_norms(grads)), out=before)
                if value_clip:
                    torch.amax(torch.stack(grad_norms(grads, math.inf)), out=row[2])
            if norm_clip:
                clip_by_norm_(grads, clipping.max_norm, before)
                torch.linalg.vector_norm(torch.stack(grad_norms(grads)), out=after)  # measured, not derived
            elif value_clip:
                clip_by_value_(grads, clipping.max_value)
                torch.linalg.vector_norm(torch.stack(grad_norms(grads)), out=after)
            if parameter_probe is not None:
                parameter_probe.before_update()
            optimizer.step()
            if parameter_probe is not None:
                parameter_probe.after_update(views)
            recorder.record(step, lr, output, y, layer_values, tapped.keys if tapped is not None else [])
            if timestep_norms is not None:
                recorder.record_timesteps(step, timestep_norms)
            recorded += 1
        steps_done = step + 1
        checkpoint_due = checkpoint_every > 0 and steps_done % checkpoint_every == 0 and steps_done < training.steps
        if checkpoint_due or steps_done % probes.flush_every == 0 or recorder.pending >= probes.flush_every:
            # A checkpoint flushes even a partial batch: it holds no recorded step.
            diverged_at = recorder.sync(final=checkpoint_due)
            if diverged_at is not None:
                break
            if checkpoint_due:
                take_checkpoint(steps_done)

    if diverged_at is None:
        diverged_at = recorder.sync(final=True)
    if diverged_at is not None:
        status, steps_done = "diverged", diverged_at + 1
    test_loss = test_accuracy = None
    if status == "succeeded":
        test_loss, test_accuracy = evaluate(model, data, loss_name)
    return RunResult(
        status=status,
        steps_done=steps_done,
        final_loss=recorder.last_loss,
        final_accuracy=recorder.last_accuracy if classification else None,
        diverged_at_step=diverged_at,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        baseline=baseline,
    )
