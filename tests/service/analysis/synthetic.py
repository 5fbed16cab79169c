"""Engine-like probe records for analysis, plot and route tests, without training anything.

Every number marked "measured" below is what the engine measured on the experiment the
function imitates (seed 0, torch 2.13.0+cpu, one thread), printed by
`python -m tests.service.analysis.measure_synthetic`, which trains them again; the
recurrent runs' decay through time is the e2e runs' (README's claims table). Between the
measured points the curves are interpolated log-linearly, and a small seeded log-normal
noise (5 %) stands in for the batch-to-batch spread; those shapes are choices, said so
where they are made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.store.records import SeriesChunk, SeriesData, TimestepChunk, TimestepData

WEIGHTS = ("layers.0.weight", "layers.1.weight", "layers.2.weight")
PARAMETERS = ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias")
PROBE_LAYERS = ("layers.0", "layers.1", "layers.2")


@dataclass
class SyntheticRun:
    spec: dict[str, Any]
    series: dict[str, list[SeriesData]]
    timesteps: list[TimestepData] = field(default_factory=list)
    status: str = "succeeded"
    result: dict[str, Any] = field(default_factory=dict)

    def chunks(self, flush_every: int = 50) -> list[SeriesChunk]:
        """The run as the worker would write it: one chunk per series per flush."""
        out = []
        for metric, series in self.series.items():
            for one in series:
                for start in range(0, len(one.steps), flush_every):
                    out.append(
                        SeriesChunk(metric, one.layer, one.position, one.steps[start : start + flush_every],
                                    one.values[start : start + flush_every])
                    )
        return out

    def timestep_chunks(self, flush_every: int = 50) -> list[TimestepChunk]:
        out = []
        for data in self.timesteps:
            for start in range(0, len(data.steps), flush_every):
                rows = slice(start, start + flush_every)
                out.append(
                    TimestepChunk(data.layer_index, data.steps[rows], data.timesteps, data.hidden_grad_norm[rows],
                                  None if data.cell_grad_norm is None else data.cell_grad_norm[rows])
                )
        return out


def _mlp_spec(name: str, activation: str, init: dict[str, Any], training: dict[str, Any], clipping: str,
              hidden: list[int]) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"type": "mlp", "hidden_sizes": hidden, "activation": activation, "init": init},
        "dataset": {"name": "mnist", "limit": 5000},
        "training": training,
        "clipping": {"mode": clipping, "threshold": 1.0},
    }


def _series(metric_layers: tuple[str, ...], matrix: np.ndarray, steps: np.ndarray) -> list[SeriesData]:
    return [SeriesData(layer, position, steps, np.ascontiguousarray(matrix[:, position]))
            for position, layer in enumerate(metric_layers)]


def _global(steps: np.ndarray, values: np.ndarray) -> list[SeriesData]:
    return [SeriesData(None, -1, steps, np.asarray(values, dtype=np.float64))]


# Measured (see the module docstring): the seed's 784-30-30-10 MNIST nets, full batch of
# 5,000, SGD lr 0.5, Xavier-uniform weights, zero biases.
SEED_ANCHOR_STEPS = np.array([0, 1, 2, 5, 8, 20, 50, 100, 199])
SEED_RATIO = {  # first/last layer mean |∂L/∂W| at SEED_ANCHOR_STEPS
    "sigmoid": (0.01672, 0.0201, 0.02919, 0.1259, 0.2536, 0.1904, 0.1007, 0.06315, 0.06536),
    "relu": (0.4029, 0.4261, 0.3037, 0.1886, 0.1755, 0.1205, 0.1443, 0.1592, 0.1908),
    "tanh": (0.3299, 0.3068, 0.3188, 0.226, 0.2402, 0.1553, 0.2231, 0.3618, 0.4179),
}
SEED_LAST_STEPS = np.array([0, 50, 199])
SEED_LAST = {  # the output layer's mean |∂L/∂W| at SEED_LAST_STEPS
    "sigmoid": (0.02042, 0.003074, 0.002797),
    "relu": (0.003706, 0.007034, 0.0008225),
    "tanh": (0.01047, 0.003431, 0.00193),
}
SEED_BACKPROP = {  # ‖∂L/∂s‖ per layer (input → output) at step 0
    "sigmoid": (0.0009461, 0.004078, 0.01362),
    "relu": (0.008121, 0.01097, 0.01343),
    "tanh": (0.01296, 0.01526, 0.0135),
}
SEED_GRAD_NORM_TOTAL = {"sigmoid": 0.5102, "relu": 0.5536, "tanh": 1.064}  # at step 0
SEED_LOSS = {"sigmoid": (2.46, 0.7881), "relu": (2.316, 0.1428), "tanh": (2.345, 0.1599)}  # steps 0 and 199

# Measured: ReLU 3×100, weights N(0, 1), SGD lr 0.1, batch 64, MNIST. Unclipped, the first
# non-finite gradient norm is at step 8 and the first non-finite loss (the divergence) at 11.
EXPLODING_NORMS = (4204.0, 1.715e6, 4.183e7, 5.005e10, 9.215e9, 4.662e10, 3.852e14, 1.05e14, np.inf, 2.021e16,
                   np.inf, np.nan)
EXPLODING_LOSS = (6372.0, 2.226e7, 6.01e7, 4.818e10, 2.688e12, 9.768e14, 3.069e14, 2.562e18, 6.467e27, 6.132e22,
                  2.166e32, np.nan)
EXPLODING_DIVERGED_AT = 11
EXPLODING_BACKPROP = (73.91, 10.02, 1.408, 0.1683)  # ‖∂L/∂s‖ per layer at step 0: 440× at the input
EXPLODING_GRAD_MEAN_ABS = (2.427, 9.956, 11.64, 30.85)  # mean |∂L/∂W| per layer at step 0
# Clipped at norm 1: measured 4,204 → 539 over 300 steps (log-normal spread 0.10), loss 6,372 → 254.
CLIPPED_NORMS, CLIPPED_LOSS, CLIPPED_SPREAD = (4204.0, 538.9), (6372.0, 254.0), 0.10

# Measured (in process, and identically by the e2e runs through a worker): adding problem,
# T = 50, hidden 64, 1,500 Adam steps at lr 0.01, norm clipping at 1. The median over the
# last ten records of ‖∂L/∂h_t‖/‖∂L/∂h_T‖ at t = RECURRENT_ANCHOR_T: the tanh RNN's falls
# to 6e-13 at t = 0, and its memory horizon (‖∂L/∂h_t‖ ≥ 1e-3 ‖∂L/∂h_T‖) is 7 timesteps
# back; the LSTM's stays above 0.06 (49 of 49); its cell's ‖∂L/∂c_1‖/‖∂L/∂c_T‖ is 0.87.
RECURRENT_ANCHOR_T = np.array([0, 10, 20, 30, 40, 49])
HIDDEN_RELATIVE = {
    "rnn": (5.677e-13, 1.601e-13, 1.246e-10, 1.772e-07, 0.0002152, 1.0),
    "lstm": (0.118, 0.0633, 0.06548, 0.06601, 0.08345, 1.0),
}
LSTM_CELL_FIRST_OVER_LAST = 0.8668
RNN_HORIZON = 7
ADDING_TEST_MSE = {"rnn": 0.1677, "lstm": 0.0005453}  # after training


def _log_interp(steps: np.ndarray, anchors: np.ndarray, values: tuple[float, ...]) -> np.ndarray:
    """Log-linear interpolation through measured points (a choice of shape between them)."""
    return np.exp(np.interp(steps, anchors, np.log(values)))


def mlp_run(activation: str, n_steps: int = 200, seed: int = 0) -> SyntheticRun:
    """The seed's 784-30-30-10 MNIST net with `sigmoid`, `relu` or `tanh`: the measured
    curves, with the seeded noise varying by `seed` (the values at step 0 are exact)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n_steps, dtype=np.int64)
    noise = np.exp(rng.normal(0.0, 0.05, size=(n_steps, 3)))
    last = _log_interp(steps, SEED_LAST_STEPS, SEED_LAST[activation])  # output layer's mean |∂L/∂W|
    ratio = _log_interp(steps, SEED_ANCHOR_STEPS, SEED_RATIO[activation])
    backprop = np.array(SEED_BACKPROP[activation])
    # The middle layer halfway (geometrically) between the first and the last: a choice;
    # biases at half their weights' mean, also a choice.
    middle = np.sqrt(ratio)
    grad_mean_abs = np.stack([last * ratio, last * ratio * 0.5, last * middle, last * middle * 0.5, last, last * 0.5], axis=1)
    grad_mean_abs *= np.repeat(noise, 2, axis=1)
    grad_mean_abs[0, 0::2] = [last[0] * ratio[0], last[0] * middle[0], last[0]]
    backprop_norm = backprop[None, :] * (last / last[0])[:, None] * noise  # follows the output layer: a choice
    backprop_norm[0] = backprop
    grad_norm_total = SEED_GRAD_NORM_TOTAL[activation] * (last / last[0]) * noise[:, 0]
    grad_norm_total[0] = SEED_GRAD_NORM_TOTAL[activation]
    loss_start, loss_end = SEED_LOSS[activation]
    loss = loss_end + (loss_start - loss_end) * np.exp(-steps / 40.0)  # measured ends, exponential between
    spec = _mlp_spec(f"{activation}-2x30", activation, {"scheme": "xavier_uniform"},
                     {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": n_steps, "seed": seed}, "none", [30, 30])
    series = {
        "grad_mean_abs": _series(PARAMETERS, grad_mean_abs, steps),
        "grad_norm": _series(PARAMETERS, grad_mean_abs * 30.0, steps),
        "grad_nonfinite": _series(PARAMETERS, np.zeros((n_steps, 6)), steps),
        "backprop_norm": _series(PROBE_LAYERS, backprop_norm, steps),
        "loss": _global(steps, loss),
        "grad_norm_total": _global(steps, grad_norm_total),
        "grad_norm_total_clipped": _global(steps, grad_norm_total),
        "clipped": _global(steps, np.zeros(n_steps)),
    }
    return SyntheticRun(spec=spec, series=series, result={"final_loss": float(loss[-1]), "diverged_at_step": None})


def exploding_run(clipping: bool) -> SyntheticRun:
    """ReLU 3×100 with N(0, 1) weights, SGD lr 0.1: the measured unclipped run, which
    diverges at step 11, or 300 clipped steps between the measured ends."""
    layers = tuple(f"layers.{i}.weight" for i in range(4))
    probes = tuple(f"layers.{i}" for i in range(4))
    if not clipping:
        norms, loss = np.array(EXPLODING_NORMS), np.array(EXPLODING_LOSS)
        clipped = np.zeros(len(norms))
        post = norms
    else:
        rng = np.random.default_rng(1)
        n = 300
        norms = np.geomspace(*CLIPPED_NORMS, n) * np.exp(rng.normal(0, CLIPPED_SPREAD, n))
        norms[0] = CLIPPED_NORMS[0]
        loss = np.geomspace(*CLIPPED_LOSS, n)
        clipped = np.ones(n)
        post = np.ones(n)
    steps = np.arange(len(norms), dtype=np.int64)
    n = len(steps)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = norms / norms[0]  # every layer follows the total norm: a choice
        grad_mean_abs = np.array(EXPLODING_GRAD_MEAN_ABS)[None, :] * scale[:, None]
        backprop_norm = np.array(EXPLODING_BACKPROP)[None, :] * scale[:, None]
    grad_nonfinite = np.zeros((n, 4))
    grad_nonfinite[~np.isfinite(norms)] = 100.0
    spec = _mlp_spec(
        f"relu-3x100-normal-{'clip' if clipping else 'noclip'}",
        "relu",
        {"scheme": "normal", "std": 1.0},
        {"optimizer": "sgd", "lr": 0.1, "batch_size": 64, "steps": 300},
        "norm" if clipping else "none",
        [100, 100, 100],
    )
    series = {
        "grad_mean_abs": _series(layers, grad_mean_abs, steps),
        "grad_nonfinite": _series(layers, grad_nonfinite, steps),
        "backprop_norm": _series(probes, backprop_norm, steps),
        "loss": _global(steps, loss),
        "grad_norm_total": _global(steps, norms),
        "grad_norm_total_clipped": _global(steps, post),
        "clipped": _global(steps, clipped),
    }
    if clipping:
        return SyntheticRun(spec=spec, series=series, result={"final_loss": float(loss[-1]), "diverged_at_step": None})
    return SyntheticRun(spec=spec, series=series, status="diverged",
                        result={"final_loss": None, "diverged_at_step": EXPLODING_DIVERGED_AT})


def hidden_decay(kind: str, seq_len: int = 50) -> np.ndarray:
    """‖∂L/∂h_t‖/‖∂L/∂h_T‖ for t = 0 … T-1 after training: through the measured points,
    log-linear between them (the anchors are for T = 50; other lengths are stretched)."""
    anchors = RECURRENT_ANCHOR_T * (seq_len - 1) / 49.0
    return np.exp(np.interp(np.arange(seq_len), anchors, np.log(HIDDEN_RELATIVE[kind])))


def recurrent_run(kind: str, n_steps: int = 100, seq_len: int = 50) -> SyntheticRun:
    """Adding problem, T = 50, hidden 64: ‖∂L/∂h_t‖ as `hidden_decay` at every recorded
    step (the trained shape throughout: a choice), ‖∂L/∂h_T‖ = 0.05 (a choice); the LSTM's
    cell gradient geometric down to the measured LSTM_CELL_FIRST_OVER_LAST (its shape a choice)."""
    steps = np.arange(0, n_steps * 10, 10, dtype=np.int64)
    timesteps = np.arange(seq_len, dtype=np.int64)
    hidden = 0.05 * hidden_decay(kind, seq_len)[None, :] * np.ones((n_steps, 1))  # (S, T)
    back = (seq_len - 1 - timesteps) / (seq_len - 1)
    cell = 0.08 * LSTM_CELL_FIRST_OVER_LAST ** back[None, :] * np.ones((n_steps, 1)) if kind == "lstm" else None
    spec = {
        "name": f"{kind}-adding-50",
        "model": {"type": kind, "hidden_size": 64, **({"forget_bias": 1.0} if kind == "lstm" else {})},
        "dataset": {"name": "adding", "seq_len": seq_len},
        "training": {"optimizer": "adam", "lr": 0.001, "steps": n_steps * 10},
        "clipping": {"mode": "norm", "threshold": 1.0},
        "logging": {"every": 10},
    }
    norms = np.full(n_steps, 0.8)
    series = {
        "loss": _global(steps, np.full(n_steps, ADDING_TEST_MSE[kind])),
        "grad_norm_total": _global(steps, norms),
        "grad_norm_total_clipped": _global(steps, norms),
        "clipped": _global(steps, np.zeros(n_steps)),
        "grad_mean_abs": _series(
            ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight"), np.full((n_steps, 3), 1e-3), steps
        ),
    }
    data = TimestepData(0, steps, timesteps, hidden, cell)
    return SyntheticRun(spec=spec, series=series, timesteps=[data])


def store_run(session: Any, run: SyntheticRun, flush_every: int = 50, owner: str = "tester") -> str:
    """Create the run's experiment, write its chunks as a worker would, finish it; its id."""
    from service import store
    from service.schemas.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate(run.spec).model_dump(mode="json")
    record = store.create_experiment(session, name=spec["name"], tags=spec["tags"], spec=spec, queue="cpu", owner=owner)
    store.claim_experiment(session, record.id, "synthetic")
    store.write_chunks(session, record.id, run.chunks(flush_every), run.timestep_chunks(flush_every), progress_step=0)
    store.finish_experiment(session, record.id, run.status, run.result)
    return record.id
