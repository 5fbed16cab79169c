"""Engine-like probe records for analysis, plot and route tests, without training anything.

The numbers follow what PyTorch measures on the seed's experiments (784-30-30-10 MNIST, full
batch of 5,000, SGD lr 0.5, Xavier weights; ReLU 3×100 with N(0, 1) weights, batch 64,
lr 0.1; adding T = 50 with hidden 64): the first/last mean |∂L/∂W| at step 0 is 0.021 for
sigmoid and 0.51 for ReLU, the sigmoid ratio recovers above 0.1 within five steps; the
unclipped N(0, 1) net's norm goes 2.4e3 → 2.6e5 → 8.8e7 → … → Inf → NaN by step 7 while its
‖∂L/∂s‖ is 380× larger at the first layer than at the output; the trained tanh RNN's
‖∂L/∂h_t‖ falls below 1e-3 of ‖∂L/∂h_T‖ 12 timesteps back, the LSTM's never does.
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


def mlp_run(activation: str, n_steps: int = 200, seed: int = 0) -> SyntheticRun:
    """The seed's 784-30-30-10 MNIST net with `sigmoid` or `relu` (or `tanh`)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n_steps, dtype=np.int64)
    noise = np.exp(rng.normal(0.0, 0.05, size=(n_steps, 3)))
    last = 0.01 * np.exp(-steps / 150.0)  # output layer's mean |∂L/∂W|
    if activation == "sigmoid":
        # 0.021 at step 0, up to 0.34 by step 8, back to about 0.1 by step 50.
        ratio = np.where(steps < 8, 0.021 * (0.34 / 0.021) ** (steps / 8.0), 0.1 + 0.24 * np.exp(-(steps - 8) / 20.0))
        backprop = np.array([0.0011, 0.0041, 0.0136])
    else:
        ratio = 0.14 + 0.37 * np.exp(-steps / 5.0)  # 0.51 at step 0, about 0.14 later
        backprop = np.array([0.0080, 0.0111, 0.0135]) if activation == "relu" else np.array([0.0154, 0.0155, 0.0136])
    middle = np.sqrt(ratio)
    grad_mean_abs = np.stack([last * ratio, last * ratio * 0.5, last * middle, last * middle * 0.5, last, last * 0.5], axis=1)
    grad_mean_abs *= np.repeat(noise, 2, axis=1)
    grad_mean_abs[0, 0::2] = [last[0] * ratio[0], last[0] * middle[0], last[0]]
    backprop_norm = backprop[None, :] * np.exp(-steps / 300.0)[:, None] * noise
    backprop_norm[0] = backprop
    grad_norm_total = 0.5 * np.exp(-steps / 150.0) * noise[:, 0]
    loss = 2.3 * np.exp(-steps / 60.0) + 0.2
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
    """ReLU 3×100 with N(0, 1) weights, SGD lr 0.1: diverges by step 7 without clipping."""
    layers = tuple(f"layers.{i}.weight" for i in range(4))
    probes = tuple(f"layers.{i}" for i in range(4))
    if not clipping:
        norms = np.array([2.40e3, 2.65e5, 8.77e7, 6.19e7, 3.94e12, 6.20e18, np.inf, np.nan])
        loss = np.array([5.35e3, 2.51e6, 3.57e9, 1.1e10, 7.8e22, 2.1e28, np.inf, np.nan])
        clipped = np.zeros(len(norms))
        post = norms
    else:
        rng = np.random.default_rng(1)
        n = 300
        norms = np.geomspace(2400.0, 500.0, n) * np.exp(rng.normal(0, 0.3, n))
        loss = np.geomspace(5350.0, 300.0, n)
        clipped = np.ones(n)
        post = np.ones(n)
    steps = np.arange(len(norms), dtype=np.int64)
    n = len(steps)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = norms / norms[0]
        last = 5.0 * scale
        grad_mean_abs = np.stack([last * 0.064, last * 0.2, last * 0.5, last], axis=1)
        backprop_norm = np.array([63.5, 9.15, 1.26, 0.168])[None, :] * scale[:, None]
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
    return SyntheticRun(spec=spec, series=series, status="diverged", result={"final_loss": None, "diverged_at_step": 6})


def recurrent_run(kind: str, n_steps: int = 100, seq_len: int = 50) -> SyntheticRun:
    """Adding problem, T = 50, hidden 64: ‖∂L/∂h_t‖ decays ×0.56 per timestep in the trained
    tanh RNN (below 1e-3 twelve timesteps back) and ×0.97 in the LSTM (0.22 at t = 0)."""
    steps = np.arange(0, n_steps * 10, 10, dtype=np.int64)
    timesteps = np.arange(seq_len, dtype=np.int64)
    back = (seq_len - 1 - timesteps)[None, :]  # (1, T)
    rho = 0.562 if kind == "rnn" else 0.97
    hidden = 0.05 * rho ** back * np.ones((n_steps, 1))  # (S, T)
    cell = 0.08 * 0.985 ** back * np.ones((n_steps, 1)) if kind == "lstm" else None
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
        "loss": _global(steps, np.full(n_steps, 0.15 if kind == "rnn" else 0.005)),
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
