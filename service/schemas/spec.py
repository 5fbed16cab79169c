"""`ExperimentSpec`: what a lab pipeline submits. Extend it, never rename a field.

Every section forbids unknown fields (a typo must not silently train something else),
every field but `model.type` and `dataset.name` has a default, and sizes are checked
against the server's `Limits` with messages that name the field and the limit.

Cross-field rules (a knob that cannot apply is an error, not silently ignored; a knob
left at its default is always fine, so a stored spec can be submitted again as is):
- `mlp` trains on the vector datasets (`mnist`, `digits`, `mnist1d`); `rnn`, `lstm` and
  `gru` on the sequence tasks (`adding`, `copy`, `temporal_order`, `sequential_mnist`).
- `model.activation` applies to `mlp` and `rnn`; LSTM and GRU cells have fixed gates
  (sigmoid) and tanh, so only `tanh` is accepted for them.
- `model.forget_bias` applies to `lstm`; `model.init.spectral_radius` to recurrent models.
- `dataset.seq_len` applies to sequence tasks (default 50; `sequential_mnist`: 784 for
  pixels, 28 for rows); `dataset.permuted` to `sequential_mnist`.
- `training.momentum` applies to `sgd`, `momentum` (default 0.9) and `rmsprop`;
  `training.nesterov` needs momentum; `training.batch_size` may not exceed
  `dataset.limit` unless `full_batch`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.budgets import check_spec_budgets
from service.schemas.examples import SPEC_EXAMPLES
from service.schemas.limits import AtMost, current_limits
from service.schemas.notify import NotifySpec
from service.schemas.text import SafeStr

ModelType = Literal["mlp", "rnn", "lstm", "gru"]
Activation = Literal["sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "softsign", "identity"]
InitScheme = Literal[
    "default",
    "normal",
    "uniform",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "identity",
]
DatasetName = Literal[
    "mnist", "digits", "mnist1d", "adding", "copy", "temporal_order", "sequential_mnist"
]
Optimizer = Literal["sgd", "momentum", "adam", "adamw", "rmsprop"]
Schedule = Literal["constant", "step", "cosine"]
ClippingMode = Literal["none", "norm", "value"]
Loss = Literal["cross_entropy", "mse"]
REGRESSION_DATASETS = ("adding",)
Device = Literal["auto", "cpu", "cuda"]

RECURRENT_MODELS = ("rnn", "lstm", "gru")
VECTOR_DATASETS = ("mnist", "digits", "mnist1d")
SEQUENCE_DATASETS = ("adding", "copy", "temporal_order", "sequential_mnist")
DEFAULT_SEQ_LEN = {"adding": 50, "copy": 50, "temporal_order": 50, "sequential_mnist": 784}
SEQUENTIAL_MNIST_LENGTHS = (28, 784)  # rows, or pixels
MOMENTUM_OPTIMIZERS = ("sgd", "momentum", "rmsprop")
MAX_TAG_LENGTH = 100


def _limited(limit_name: str, what: str = "", keyword: str = "maximum") -> AtMost:
    """At most the serving app's `limits.<limit_name>`, in validation and in the schema."""
    return AtMost(limit_name, what, keyword)


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [example["value"] for example in SPEC_EXAMPLES.values()]},
    )


def _whole_float_as_int(value: Any) -> Any:
    # JSON Schema counts 45037.0 as an integer, so the API must take it; everything else
    # that is not an int (false, "12", 1.5) still meets StrictInt's refusal.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema means it: whole numbers, written 12 or 12.0, never false or "12".
# Last in its Annotated[StrictInt, …]: placed before the Field bounds, it would hide them
# from the published schema.
WHOLE_NUMBER = BeforeValidator(_whole_float_as_int)


def _fail(kind: str, message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, context)


class InitSpec(_Section):
    """How weights are initialised; biases start at zero unless the scheme says otherwise."""

    scheme: InitScheme = Field(
        "default",
        description="PyTorch's default, N(0, std²) `normal`, U(-std, std) `uniform`, Glorot "
        "(`xavier_*`, Glorot & Bengio 2010), He (`kaiming_*`), `orthogonal`, or `identity` "
        "for the recurrent matrix (IRNN, Le et al. 2015).",
    )
    std: float = Field(1.0, gt=0, le=1e3, description="Scale of `normal` and `uniform`.")
    spectral_radius: float | None = Field(
        None,
        gt=0,
        le=100,
        description="Recurrent models: rescale each recurrent weight matrix to this spectral "
        "radius after initialising it (Pascanu et al. 2013: > 1 invites exploding, < 1 "
        "vanishing gradients).",
    )


class ModelSpec(_Section):
    type: ModelType = Field(description="`mlp`, or a recurrent `rnn` (Elman), `lstm`, `gru`.")
    hidden_sizes: Annotated[
        list[Annotated[int, Field(ge=1), _limited("max_width", "a layer width of ")]],
        _limited("max_depth", "a depth of ", "maxItems"),
    ] = Field(
        default_factory=lambda: [30, 30],
        min_length=1,
        description="MLP: units of each hidden layer, input to output (depth = length).",
    )
    hidden_size: Annotated[int, Field(ge=1), _limited("max_width")] = Field(
        64, description="Recurrent models: units per recurrent layer."
    )
    num_layers: Annotated[int, Field(ge=1), _limited("max_depth", "a depth of ")] = Field(
        1, description="Recurrent models: stacked recurrent layers."
    )
    activation: Activation = Field(
        "tanh", description="Hidden non-linearity of `mlp` and `rnn` (LSTM/GRU gates are fixed)."
    )
    init: InitSpec = Field(default_factory=InitSpec)
    forget_bias: float = Field(
        1.0,
        ge=-100,
        le=100,
        description="LSTM: initial forget-gate bias (1.0 keeps the gate open early on, "
        "Gers et al. 2000; Jozefowicz et al. 2015).",
    )

    @model_validator(mode="after")
    def _knobs_apply_to_type(self) -> ModelSpec:
        recurrent = self.type in RECURRENT_MODELS
        if self.type in ("lstm", "gru") and self.activation != "tanh":
            raise _fail(
                "not_applicable",
                "model.activation '{activation}' cannot apply to {type}: its gates are "
                "sigmoid and its cell non-linearity tanh; use type 'rnn' to study activations",
                activation=self.activation,
                type=self.type,
            )
        if self.type != "lstm" and self.forget_bias != 1.0:
            raise _fail(
                "not_applicable",
                "model.forget_bias applies only to type 'lstm', not '{type}'",
                type=self.type,
            )
        if not recurrent and self.init.scheme == "identity":
            raise _fail(
                "not_applicable",
                "model.init.scheme 'identity' initialises a recurrent matrix (IRNN, Le et al. "
                "2015) and needs type rnn, lstm or gru; an mlp's layers are not square",
            )
        if not recurrent and self.init.spectral_radius is not None:
            raise _fail(
                "not_applicable",
                "model.init.spectral_radius applies only to recurrent models (rnn, lstm, gru)",
            )
        return self


class DatasetSpec(_Section):
    name: DatasetName = Field(
        description="Vector data for `mlp`: `mnist`, `digits`, `mnist1d`. Sequence tasks for "
        "recurrent models: `adding`, `copy`, `temporal_order`, `sequential_mnist`."
    )
    split: Literal["auto", "train", "test"] = Field(
        "auto",
        description="MNIST's files to train on: `train` (60,000 images, tested on the 10,000 of `test`), `test` "
        "(9,000 of the test images, 1,000 held out), or `auto`: `train` when the worker has its files, else `test` "
        "(with a warning in the worker's log).",
    )
    limit: Annotated[int, Field(ge=1), _limited("max_dataset_limit")] = Field(
        5000,
        description="Examples to use: a stratified subset of real data, or how many "
        "sequences to generate for the synthetic tasks.",
    )
    seq_len: Annotated[int, Field(ge=2), _limited("max_seq_len")] | None = Field(
        None,
        description="Sequence tasks: the length T (the delay for `copy`). Default 50; "
        "`sequential_mnist` takes 784 (pixel by pixel) or 28 (row by row).",
    )
    permuted: bool = Field(
        False, description="`sequential_mnist`: a fixed random permutation of the pixels."
    )

    @model_validator(mode="after")
    def _resolve_sequence_fields(self) -> DatasetSpec:
        if self.name in SEQUENCE_DATASETS:
            if self.seq_len is None:
                self.seq_len = DEFAULT_SEQ_LEN[self.name]
            if self.name == "sequential_mnist" and self.seq_len not in SEQUENTIAL_MNIST_LENGTHS:
                raise _fail(
                    "invalid_seq_len",
                    "dataset.seq_len for sequential_mnist must be 784 (pixels) or 28 (rows), "
                    "not {seq_len}",
                    seq_len=self.seq_len,
                )
        elif self.seq_len is not None:
            raise _fail(
                "not_applicable",
                "dataset.seq_len applies only to sequence tasks ({tasks}), not '{name}'",
                tasks=", ".join(SEQUENCE_DATASETS),
                name=self.name,
            )
        if self.permuted and self.name != "sequential_mnist":
            raise _fail(
                "not_applicable",
                "dataset.permuted applies only to sequential_mnist, not '{name}'",
                name=self.name,
            )
        return self


class TrainingSpec(_Section):
    optimizer: Optimizer = Field(
        "sgd", description="`sgd`, `momentum` (SGD with momentum), `adam`, `adamw`, `rmsprop`."
    )
    lr: float = Field(0.01, gt=0, le=1e3, description="Learning rate (peak, with a schedule).")
    momentum: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="sgd (default 0), momentum (default 0.9) and rmsprop (default 0) only.",
    )
    nesterov: bool = Field(False, description="Nesterov momentum (sgd/momentum with momentum > 0).")
    batch_size: Annotated[int, Field(ge=1), _limited("max_batch_size")] = Field(
        64, description="Examples per step (ignored with full_batch); at most dataset.limit unless full_batch."
    )
    full_batch: bool = Field(
        False, description="Train on all `dataset.limit` examples at every step (the seed's notebook)."
    )
    steps: Annotated[int, Field(ge=1), _limited("max_steps")] = Field(
        1000, description="Optimizer steps."
    )
    seed: int = Field(0, ge=0, lt=2**32, description="Seeds data, initialisation and batching.")
    weight_decay: float = Field(0.0, ge=0, le=10)
    schedule: Schedule = Field(
        "constant", description="Learning-rate schedule: constant, step decay, or cosine to zero."
    )
    lr_step_size: Annotated[int, Field(ge=1), _limited("max_steps")] | None = Field(
        None, description="`step` schedule: steps between decays (default steps // 3)."
    )
    lr_gamma: float = Field(0.1, gt=0, le=1, description="`step` schedule: decay factor.")
    loss: Loss | None = Field(
        None,
        description="`cross_entropy` (the default for classification) or `mse`: ½‖f(x) − onehot(y)‖² "
        "per example for classification (Cohen et al. 2021's square loss), the squared error for "
        "the regression task `adding` (its only loss). Stored resolved.",
    )
    max_runtime_s: Annotated[int, Field(ge=1), _limited("max_runtime_s")] | None = Field(
        None,
        validate_default=True,
        description="Wall-clock seconds the run may train; then it stops like a cancel, keeps its "
        "points and ends `timed_out`. Default and maximum: the server's GRADWATCH_LIMIT_MAX_RUNTIME_S.",
    )

    @field_validator("max_runtime_s")
    @classmethod
    def _runtime_default(cls, value: int | None, info: ValidationInfo) -> int:
        return current_limits(info).max_runtime_s if value is None else value

    @model_validator(mode="after")
    def _resolve_optimizer_fields(self) -> TrainingSpec:
        if self.optimizer not in MOMENTUM_OPTIMIZERS and self.momentum is not None:
            raise _fail(
                "not_applicable",
                "training.momentum applies to sgd, momentum and rmsprop, not '{optimizer}' "
                "(Adam's betas are fixed at PyTorch's defaults)",
                optimizer=self.optimizer,
            )
        if self.momentum is None and self.optimizer in MOMENTUM_OPTIMIZERS:
            self.momentum = 0.9 if self.optimizer == "momentum" else 0.0
        if self.nesterov and not self.momentum:
            raise _fail(
                "not_applicable",
                "training.nesterov needs optimizer sgd or momentum with training.momentum > 0",
            )
        if self.nesterov and self.optimizer == "rmsprop":
            raise _fail("not_applicable", "training.nesterov does not apply to rmsprop")
        if self.schedule == "step":
            if self.lr_step_size is None:
                self.lr_step_size = max(1, self.steps // 3)
        elif self.lr_step_size is not None:
            raise _fail(
                "not_applicable", "training.lr_step_size applies only to schedule 'step'"
            )
        return self


class ClippingSpec(_Section):
    mode: ClippingMode = Field(
        "none",
        description="`norm`: rescale the global gradient to at most `threshold` (Pascanu et "
        "al. 2013, Alg. 1); `value`: clamp each element to ±threshold.",
    )
    threshold: float = Field(1.0, gt=0, le=1e6)


class LoggingSpec(_Section):
    every: Annotated[int, Field(ge=1), _limited("max_steps")] = Field(
        1, description="Record the probes every this many steps; at most training.steps."
    )
    flush_every: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Recorded steps the engine gathers before handing a batch to the store "
        "(default: the worker's GRADWATCH_FLUSH_EVERY).",
    )
    checkpoint_every: Literal["auto"] | Annotated[StrictInt, Field(ge=0), _limited("max_steps"), WHOLE_NUMBER] | None = Field(
        "auto",
        description="Training steps between two checkpoints of the run, from which it resumes on "
        "another worker if its worker dies or shuts down (README, \"Failure handling\"). `auto`: a "
        "few per run, on flushes, and at least every GRADWATCH_CHECKPOINT_EVERY_FLUSHES flushes; "
        "0 or null: none (a lost run then starts again from step 0).",
    )
    timesteps_every: Annotated[int, Field(ge=1), _limited("max_steps")] = Field(
        10,
        description="Recurrent models: record the gradient through time on every this many "
        "recorded steps. Recording it costs about one more backward pass of the recurrence "
        "(the fused kernel itself always runs whole), so the default keeps through-time "
        "probes to about a tenth of that; 1 records it on every recorded step.",
    )
    max_timesteps: Annotated[int, Field(ge=2), _limited("max_seq_len")] = Field(
        100,
        description="Recurrent models: record ‖∂L/∂h_t‖ at most at this many timesteps, "
        "evenly spaced, the first and the last always included.",
    )
    histogram_every: Annotated[StrictInt, Field(ge=1), _limited("max_steps"), WHOLE_NUMBER] | None = Field(
        None,
        description="Histograms of log10|∂L/∂θ| per parameter tensor and of each layer's "
        "pre-activation and output on every this many recorded steps "
        "(`GET /experiments/{id}/histograms`). Off by default.",
    )
    curvature_every: Annotated[StrictInt, Field(ge=1), _limited("max_steps"), WHOLE_NUMBER] | None = Field(
        None,
        description="Measure the sharpness λ_max of the training loss (series `hessian_max_eig`) "
        "every this many training steps, by power iteration on Hessian-vector products. Off by "
        "default: one measurement costs about 2·curvature_iterations backward passes over "
        "curvature_batch examples.",
    )
    curvature_iterations: Annotated[StrictInt, Field(ge=1), _limited("max_curvature_iterations"), WHOLE_NUMBER] = Field(
        20,
        description="Power-iteration steps per measurement; each starts from the previous "
        "measurement's eigenvector.",
    )
    curvature_batch: Annotated[StrictInt, Field(ge=1), _limited("max_batch_size"), WHOLE_NUMBER] = Field(
        1000,
        description="The curvature is measured on a fixed, seeded subset of this many training "
        "examples (all of them, if fewer), the same at every measurement.",
    )
    curvature_trace_samples: Annotated[StrictInt, Field(ge=0), _limited("max_curvature_trace_samples"), WHOLE_NUMBER] = Field(
        0,
        description="Rademacher probes of Hutchinson's estimator of the Hessian trace per "
        "measurement (series `hessian_trace`); 0 measures no trace.",
    )

    @model_validator(mode="after")
    def _curvature_knobs_apply(self) -> LoggingSpec:
        if self.curvature_every is None and (
            self.curvature_iterations != 20 or self.curvature_batch != 1000 or self.curvature_trace_samples != 0
        ):
            raise _fail(
                "not_applicable",
                "logging.curvature_iterations, curvature_batch and curvature_trace_samples apply "
                "only when logging.curvature_every is set",
            )
        return self


class ExperimentSpec(_Section):
    """One training run: model, data, optimisation, clipping, what to record, and where."""

    name: Annotated[SafeStr, Field(min_length=1), _limited("max_name_length", "a name length of ", "maxLength")] | None = (
        Field(None, description="One line of text (no control characters); default `<model.type>-<dataset.name>`.")
    )
    tags: Annotated[
        list[Annotated[SafeStr, Field(min_length=1, max_length=MAX_TAG_LENGTH)]],
        _limited("max_tags", "a tag count of ", "maxItems"),
    ] = Field(default_factory=list, description="Labels to filter by (`GET /experiments?tag=`).")
    model: ModelSpec
    dataset: DatasetSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    clipping: ClippingSpec = Field(default_factory=ClippingSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    device: Device = Field(
        "auto", description="`cuda` runs on the `gpu` queue's workers; `auto` and `cpu` on `cpu`."
    )
    notify: NotifySpec | None = Field(
        None, description="POST a signed event to this URL when the run ends (see the README's Callbacks)."
    )

    @field_validator("tags")
    @classmethod
    def _without_duplicates(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))  # duplicates carry no meaning

    @field_validator("dataset")
    @classmethod
    def _dataset_fits_model(cls, dataset: DatasetSpec, info: ValidationInfo) -> DatasetSpec:
        model: ModelSpec | None = info.data.get("model")
        if model is None:
            return dataset  # the model section failed; its own error says why
        if model.type == "mlp" and dataset.name not in VECTOR_DATASETS:
            raise _fail(
                "incompatible",
                "dataset.name '{name}' is a sequence task and model.type 'mlp' needs one of "
                "{choices}; use rnn, lstm or gru for sequence tasks",
                name=dataset.name,
                choices=", ".join(VECTOR_DATASETS),
            )
        if model.type in RECURRENT_MODELS and dataset.name not in SEQUENCE_DATASETS:
            raise _fail(
                "incompatible",
                "model.type '{type}' needs a sequence task ({choices}), not '{name}'; "
                "sequential_mnist feeds MNIST to a recurrent model",
                type=model.type,
                choices=", ".join(SEQUENCE_DATASETS),
                name=dataset.name,
            )
        return dataset

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ExperimentSpec:
        if self.name is None:
            self.name = f"{self.model.type}-{self.dataset.name}"
        if not self.training.full_batch and self.training.batch_size > self.dataset.limit:
            raise _fail(
                "incompatible",
                "training.batch_size {batch_size} exceeds dataset.limit {limit}; lower it, "
                "raise dataset.limit, or set training.full_batch",
                batch_size=self.training.batch_size,
                limit=self.dataset.limit,
            )
        regression = self.dataset.name in REGRESSION_DATASETS
        if regression and self.training.loss == "cross_entropy":
            raise _fail(
                "incompatible",
                "training.loss 'cross_entropy' needs a classification task; '{name}' is a "
                "regression task trained with 'mse'",
                name=self.dataset.name,
            )
        if self.training.loss is None:
            self.training.loss = "mse" if regression else "cross_entropy"
        if self.logging.every > self.training.steps:
            raise _fail(
                "incompatible",
                "logging.every {every} exceeds training.steps {steps}: nothing would be recorded",
                every=self.logging.every,
                steps=self.training.steps,
            )
        # Whole-spec budgets (parameters, memory, points), once every field is valid.
        check_spec_budgets(self.model_dump(mode="json"), current_limits(info))
        return self

    @property
    def queue(self) -> str:
        """The Celery queue: `gpu` for `device: cuda`, else `cpu`."""
        return "gpu" if self.device == "cuda" else "cpu"

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [example["value"] for example in SPEC_EXAMPLES.values()]},
    )
