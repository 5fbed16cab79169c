"""From the stored spec to the engine's configuration.

The experiment row holds the validated, fully defaulted `ExperimentSpec` as JSON (the API
checked every field and limit). This module turns it into the engine's `RunConfig` and
adds what belongs to the worker rather than to the user: where datasets live, whether
they may be downloaded, and how often the engine hands records to the writer. It reads
the JSON directly (no pydantic model) so the worker depends on the spec's wire format
only, which lab pipelines already depend on and which never renames a field.
"""

from __future__ import annotations

from typing import Any

from service.config import Settings
from workers.engine.config import (
    ClippingConfig,
    CurvatureConfig,
    DatasetConfig,
    InitConfig,
    ModelConfig,
    ProbeConfig,
    RunConfig,
    TrainingConfig,
)

GENERATED_TASKS = ("adding", "copy", "temporal_order")


def to_run_config(spec: dict[str, Any], settings: Settings) -> RunConfig:
    """The engine's configuration for a stored spec; raises ValueError naming the field
    when the spec asks for something the engine cannot do."""
    model, dataset = spec["model"], spec["dataset"]
    training = spec.get("training") or {}
    clipping = spec.get("clipping") or {}
    logging = spec.get("logging") or {}
    config = RunConfig(
        model=ModelConfig(
            kind=model["type"],
            hidden_sizes=tuple(model.get("hidden_sizes") or (30, 30)),
            hidden_size=model.get("hidden_size", 64),
            num_layers=model.get("num_layers", 1),
            activation=model.get("activation", "tanh"),
        ),
        init=_init_config(model),
        dataset=_dataset_config(dataset, settings),
        training=_training_config(training),
        clipping=ClippingConfig(
            mode=clipping.get("mode", "none"),
            # One threshold in the spec: a norm for `norm`, a bound per element for `value`.
            max_norm=clipping.get("threshold", 1.0),
            max_value=clipping.get("threshold", 1.0),
        ),
        probes=ProbeConfig(
            log_every=logging.get("every", 1),
            flush_every=logging.get("flush_every") or settings.flush_every,
            timesteps_every=logging.get("timesteps_every", ProbeConfig.timesteps_every),
            max_timesteps=logging.get("max_timesteps", ProbeConfig.max_timesteps),
            histogram_every=logging.get("histogram_every") or 0,
        ),
        curvature=CurvatureConfig(
            every=logging.get("curvature_every") or 0,
            iterations=logging.get("curvature_iterations", CurvatureConfig.iterations),
            batch=logging.get("curvature_batch", CurvatureConfig.batch),
            trace_samples=logging.get("curvature_trace_samples", CurvatureConfig.trace_samples),
        ),
        seed=training.get("seed", 0),
        device=spec.get("device", "auto"),
    )
    config.validate()
    return config


def _init_config(model: dict[str, Any]) -> InitConfig:
    init = model.get("init") or {}
    scheme = init.get("scheme", "default")
    std = init.get("std", 1.0)
    recurrent_scheme = None
    if scheme == "identity":
        # IRNN (Le et al. 2015): the identity is for the square hidden-to-hidden matrix;
        # the other matrices keep PyTorch's default.
        if model["type"] == "mlp":
            raise ValueError(
                "model.init.scheme 'identity' applies only to recurrent models (rnn, lstm, gru)"
            )
        scheme, recurrent_scheme = "default", "identity"
    return InitConfig(
        scheme=scheme,
        std=std,  # normal: N(0, std²)
        bound=std,  # uniform: U(-std, std), as the spec documents
        recurrent_scheme=recurrent_scheme,
        spectral_radius=init.get("spectral_radius"),
        forget_bias=model.get("forget_bias", 1.0),
    )


def _dataset_config(dataset: dict[str, Any], settings: Settings) -> DatasetConfig:
    name = dataset["name"]
    limit = dataset.get("limit")
    seq_len = dataset.get("seq_len")
    config = DatasetConfig(
        name=name,
        split=dataset.get("split", "auto"),
        data_dir=str(settings.resolved_data_dir),
        download=settings.allow_download,
        download_timeout_s=settings.download_timeout_s,
        download_mirrors=(settings.mnist_mirror_url,) if settings.mnist_mirror_url else (),
        permuted=dataset.get("permuted", False),
    )
    if name in GENERATED_TASKS:
        # For generated tasks the spec's `limit` is how many training sequences to make.
        if limit is not None:
            config.num_train = limit
        config.seq_len = seq_len or config.seq_len
    else:
        config.limit = limit
    if name == "sequential_mnist":
        config.pixel_order = "pixels" if seq_len in (None, 784) else "rows"
    return config


def _training_config(training: dict[str, Any]) -> TrainingConfig:
    optimizer = training.get("optimizer", "sgd")
    momentum = training.get("momentum")
    if optimizer == "sgd" and momentum:
        optimizer = "momentum"  # the engine's SGD with momentum (and nesterov)
    config = TrainingConfig(
        steps=training.get("steps", 1000),
        # Full batch: every step sees the whole training set (the seed's notebook).
        batch_size=None if training.get("full_batch") else training.get("batch_size", 64),
        optimizer=optimizer,
        lr=training.get("lr", 0.01),
        nesterov=training.get("nesterov", False),
        weight_decay=training.get("weight_decay", 0.0),
        schedule=training.get("schedule", "constant"),
        gamma=training.get("lr_gamma", 0.1),
        loss=training.get("loss"),
    )
    if momentum is not None:
        config.momentum = momentum
    if training.get("lr_step_size") is not None:
        config.step_size = training["lr_step_size"]
    return config


def checkpoint_interval(spec: dict[str, Any], settings: Settings, flush_every: int) -> int:
    """Training steps between checkpoints (0: none) for the spec's `logging.checkpoint_every`.

    `auto` (also for specs stored before the field existed): about four per run, rounded
    to whole flushes (a checkpoint then costs no extra flush), and at most
    `checkpoint_every_flushes` flushes apart, so a long run never loses more than that."""
    logging = spec.get("logging") or {}
    every = logging.get("checkpoint_every", "auto")
    if every is None:
        return 0
    if every != "auto":
        return int(every)
    steps = int((spec.get("training") or {}).get("steps", 1_000))
    few_per_run = max(1, round(steps / 4 / flush_every)) * flush_every
    return min(settings.checkpoint_every_flushes * flush_every, few_per_run)
