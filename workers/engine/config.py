"""Plain dataclasses that configure one training run.

The service validates a user's spec and builds a `RunConfig`; the engine trusts it only as
far as `RunConfig.validate()` checks (names and ranges), so that a bad value fails before
any data is loaded, with a message naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "softsign", "identity")
MODEL_KINDS = ("mlp", "rnn", "lstm", "gru")
INIT_SCHEMES = (
    "default",
    "normal",
    "uniform",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
)
# `identity` only makes sense for the square hidden-to-hidden matrix (IRNN, Le et al. 2015).
RECURRENT_INIT_SCHEMES = (*INIT_SCHEMES, "identity")
DATASETS = ("mnist", "digits", "mnist1d", "adding", "copy", "temporal_order", "sequential_mnist")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
CLIPPING_MODES = ("none", "norm", "value")
LOSSES = ("cross_entropy", "mse")
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class ModelConfig:
    kind: str = "mlp"  # "mlp" | "rnn" (Elman) | "lstm" | "gru"
    hidden_sizes: tuple[int, ...] = (100, 100)  # mlp: width of each hidden layer, input → output
    hidden_size: int = 64  # rnn/lstm/gru: units in each recurrent layer
    num_layers: int = 1  # rnn/lstm/gru: stacked recurrent layers
    activation: str = "tanh"  # mlp hidden units and the Elman RNN; LSTM/GRU gates are σ/tanh by definition
    negative_slope: float = 0.01  # leaky_relu: slope for negative inputs


@dataclass
class InitConfig:
    scheme: str = "default"  # one of INIT_SCHEMES; "default" keeps PyTorch's reset_parameters()
    std: float = 0.01  # normal: weights ~ N(0, std²); the seed's "Gaussian, std one" is std=1.0
    bound: float = 0.05  # uniform: weights ~ U(-bound, bound)
    gain: float = 1.0  # xavier_* and orthogonal: the gain (Glorot & Bengio 2010 use 1)
    recurrent_scheme: str | None = None  # hidden-to-hidden matrices; None = `scheme`; "identity" = IRNN
    spectral_radius: float | None = None  # rescale each hidden-to-hidden block to this radius (Pascanu 2013)
    bias: float = 0.0  # every bias under a non-default scheme ("biases zero unless the scheme says otherwise")
    forget_bias: float | None = 1.0  # LSTM forget-gate bias under every scheme (Gers et al. 2000); None = leave


@dataclass
class DatasetConfig:
    name: str = "mnist"  # one of DATASETS
    split: str = "auto"  # mnist/sequential_mnist: the IDX files to train on, "train", "test" (see test_size) or "auto" (train if present)
    data_dir: str | None = None  # folder holding mnist/ (the service passes its GRADWATCH_DATA_DIR)
    download: bool = False  # fetch missing MNIST files from the public mirror (checked by MD5)
    download_timeout_s: float = 60.0  # per file, connect and read
    download_mirrors: tuple[str, ...] = ()  # base URLs serving the MNIST .gz files; () = the public mirrors
    limit: int | None = None  # keep a stratified subset of this many training examples
    test_size: int | None = None  # held out when a split has no test set of its own: None = 1,000 (mnist "test"), 360 (digits)
    seq_len: int = 50  # adding/temporal_order: the sequence length T; copy: the delay T
    num_train: int = 10_000  # generated tasks (adding, copy, temporal_order): training sequences
    num_test: int = 1_000  # generated tasks: held-out sequences
    pixel_order: str = "rows"  # sequential_mnist: "rows" (28 steps of 28 pixels) or "pixels" (784 steps of 1)
    permuted: bool = False  # sequential_mnist: one fixed random permutation of the steps (Le et al. 2015)
    seed: int = 0  # generated data and permutations; not the run seed, so every run sees the same data


@dataclass
class TrainingConfig:
    steps: int = 1_000  # optimisation steps
    batch_size: int | None = 64  # None = full batch: every step uses the whole training set (the seed notebook)
    optimizer: str = "sgd"  # one of OPTIMIZERS; "momentum" is SGD with `momentum` (and `nesterov`)
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # "momentum" only
    nesterov: bool = False  # "momentum" only (Sutskever et al. 2013)
    weight_decay: float = 0.0  # L2 penalty (sgd, momentum, adam, rmsprop) or decoupled decay (adamw)
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw
    eps: float = 1e-8  # adam/adamw/rmsprop denominator
    alpha: float = 0.99  # rmsprop smoothing constant
    schedule: str = "constant"  # "constant" | "step" | "cosine"
    step_size: int = 1_000  # step schedule: multiply the lr by `gamma` every `step_size` steps
    gamma: float = 0.1  # step schedule factor
    min_lr: float = 0.0  # cosine schedule: the lr reached at the last step
    # None = the task's own: cross-entropy for classification, MSE for regression. "mse" on a
    # classification task is ½‖f(x) − onehot(y)‖² per example, the square loss under which
    # Cohen et al. 2021 watch full-batch GD's sharpness rise to 2/η.
    loss: str | None = None


@dataclass
class ClippingConfig:
    mode: str = "none"  # "none" | "norm" (global L2, Pascanu et al. 2013, Alg. 1) | "value" (element-wise)
    max_norm: float = 1.0  # norm: the threshold on ‖g‖ over all parameters
    max_value: float = 1.0  # value: every gradient element is clamped to [-max_value, max_value]


@dataclass
class ProbeConfig:
    log_every: int = 1  # record every n-th training step (the last step is always recorded)
    # Recorded steps per flush. The losses of all steps are also checked on the host at every
    # flush and at least every `flush_every` training steps, so a diverged run stops within that
    # many steps. 20 keeps the promise "within 20 steps", keeps at most 20 steps of probe
    # tensors on the device, and makes the one host transfer per flush negligible.
    flush_every: int = 20
    parameters: bool = True  # per parameter tensor gradient and weight statistics
    layers: bool = True  # per layer back-propagated signal, activation and gate statistics
    timesteps: bool = True  # recurrent models: ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖) through time
    timesteps_every: int = 1  # record the timestep gradients on every n-th recorded step
    # Recorded timesteps, evenly spaced, first and last included. The recurrence runs as one
    # fused call however many there are (through_time.py); more cost only their norms.
    max_timesteps: int = 16
    # A σ/tanh/softsign unit is saturated when its derivative is below this fraction of the
    # activation's largest derivative (σ: outside [0.013, 0.987]; tanh: |a| > 0.975).
    saturation_threshold: float = 0.05
    # Histograms of log10|g| per parameter tensor and of each layer's pre-activation and
    # output on every n-th recorded step (workers/engine/histograms.py); 0 = never.
    histogram_every: int = 0
    # The parameter statistics from one kernel compiled by torch.compile, warmed in a background
    # thread (row_statistics.py); the plain PyTorch path serves until then, and when False.
    # Off by default: the compiled reduction rounds a row sum a float32 ulp away from the
    # plain one, so a run that switched paths when the compile finished was no longer
    # reproducible step for step, and its CPU speed-up is not yet shown (README, Performance).
    fused: bool = False
    # The C++ loops on a CPU with AVX2 and FMA: the parameter statistics (row_statistics.py),
    # the layer and gate statistics, and float32 LSTMs in gradwatch's own layer (lstm_kernel.py);
    # False keeps the plain PyTorch paths, the reference they are tested against.
    native: bool = True


@dataclass
class CurvatureConfig:
    every: int = 0  # measure the sharpness every n-th training step; 0 = never
    iterations: int = 20  # power-iteration steps (Hessian-vector products) per measurement
    batch: int = 1_000  # a fixed, seeded subset of this many training examples (all, if fewer)
    trace_samples: int = 0  # Hutchinson probes for tr(H) per measurement; 0 = no trace


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    clipping: ClippingConfig = field(default_factory=ClippingConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    seed: int = 0  # initial weights and batch order
    device: str = "cpu"  # "cpu" | "cuda" | "auto" (cuda when available)

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        checks: list[tuple[str, object, tuple[object, ...]]] = [
            ("model.kind", self.model.kind, MODEL_KINDS),
            ("model.activation", self.model.activation, ACTIVATIONS),
            ("init.scheme", self.init.scheme, INIT_SCHEMES),
            ("init.recurrent_scheme", self.init.recurrent_scheme, (None, *RECURRENT_INIT_SCHEMES)),
            ("dataset.name", self.dataset.name, DATASETS),
            ("dataset.split", self.dataset.split, ("auto", "train", "test")),
            ("dataset.pixel_order", self.dataset.pixel_order, ("rows", "pixels")),
            ("training.optimizer", self.training.optimizer, OPTIMIZERS),
            ("training.schedule", self.training.schedule, SCHEDULES),
            ("clipping.mode", self.clipping.mode, CLIPPING_MODES),
            ("training.loss", self.training.loss, (None, *LOSSES)),
            ("device", self.device, DEVICES),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
        positive = {
            "model.hidden_size": self.model.hidden_size,
            "model.num_layers": self.model.num_layers,
            "training.steps": self.training.steps,
            "training.step_size": self.training.step_size,
            "probes.log_every": self.probes.log_every,
            "probes.flush_every": self.probes.flush_every,
            "probes.timesteps_every": self.probes.timesteps_every,
            "probes.max_timesteps": self.probes.max_timesteps - 1,  # first and last at least
            "dataset.seq_len": self.dataset.seq_len,
            "dataset.num_train": self.dataset.num_train,
            "dataset.num_test": self.dataset.num_test,
            "curvature.iterations": self.curvature.iterations,
            "curvature.batch": self.curvature.batch,
        }
        if self.training.batch_size is not None:
            positive["training.batch_size"] = self.training.batch_size
        if self.dataset.limit is not None:
            positive["dataset.limit"] = self.dataset.limit
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        never_or_more = {
            "curvature.every": self.curvature.every,
            "curvature.trace_samples": self.curvature.trace_samples,
            "probes.histogram_every": self.probes.histogram_every,
        }
        for name, value in never_or_more.items():
            if value < 0:
                raise ValueError(f"{name} must be 0 (never) or more, got {value}")
        if self.model.kind == "mlp" and any(size < 1 for size in self.model.hidden_sizes):
            raise ValueError(f"model.hidden_sizes must all be at least 1, got {self.model.hidden_sizes}")
        if self.training.lr <= 0:
            raise ValueError(f"training.lr must be positive, got {self.training.lr}")
        if self.clipping.mode == "norm" and self.clipping.max_norm <= 0:
            raise ValueError(f"clipping.max_norm must be positive, got {self.clipping.max_norm}")
        if self.clipping.mode == "value" and self.clipping.max_value <= 0:
            raise ValueError(f"clipping.max_value must be positive, got {self.clipping.max_value}")
        if self.init.spectral_radius is not None and self.init.spectral_radius <= 0:
            raise ValueError(f"init.spectral_radius must be positive, got {self.init.spectral_radius}")
