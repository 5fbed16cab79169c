"""Where the numbers of `synthetic.py` come from: the engine, on the essay's experiments.

    python -m tests.service.analysis.measure_synthetic [--skip-adding]

Trains each experiment `synthetic.py` imitates with `workers.engine.train` (seed 0, one
torch thread, the MNIST test split from GRADWATCH_DATA_DIR) and prints the measured
numbers in the form `synthetic.py` holds them. Not a test: a few minutes of training, run
by hand when the engine changes; the last run's output is pasted into `synthetic.py`
(torch 2.13.0+cpu, 2026-12-01).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from service.config import Settings
from service.schemas.spec import ExperimentSpec
from workers.engine import train
from workers.spec import to_run_config

ANCHORS = (0, 1, 2, 5, 8, 20, 50, 100, 199)  # steps at which the seed's ratios are kept
LAST_ANCHORS = (0, 50, 199)


def measure(spec: dict) -> tuple[object, dict[tuple[str, str | None], np.ndarray], list]:
    data_dir = Path(os.environ.get("GRADWATCH_DATA_DIR", Path(__file__).resolve().parents[3].parent / "shared" / "data"))
    stored = ExperimentSpec.model_validate(spec).model_dump(mode="json")
    batches: list = []
    result = train(to_run_config(stored, Settings(data_dir=data_dir, allow_download=False)), batches.append)
    series = {key: np.concatenate([b.values[key] for b in batches]) for key in batches[0].values}
    return result, series, batches


def rounded(values: np.ndarray | list[float], digits: int = 4) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64)]


def seed_runs() -> None:
    for activation in ("sigmoid", "relu", "tanh"):
        _, series, _ = measure({
            "model": {"type": "mlp", "hidden_sizes": [30, 30], "activation": activation, "init": {"scheme": "xavier_uniform"}},
            "dataset": {"name": "mnist", "split": "test", "limit": 5000},
            "training": {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": 200, "seed": 0},
        })
        first, last = series[("grad_mean_abs", "layers.0.weight")], series[("grad_mean_abs", "head.weight")]
        print(f"{activation}: first/last mean |dL/dW| at {ANCHORS}: {rounded((first / last)[list(ANCHORS)])}")
        print(f"  last layer at {LAST_ANCHORS}: {rounded(last[list(LAST_ANCHORS)])}")
        print(f"  backprop_norm at step 0: {rounded([series[('backprop_norm', l)][0] for l in ('layers.0', 'layers.1', 'head')])}")
        print(f"  grad_norm_total at step 0: {rounded([series[('grad_norm_total', None)][0]])}")
        print(f"  loss at steps 0, 199: {rounded(series[('loss', None)][[0, 199]])}")


def exploding_runs() -> None:
    base = {
        "model": {"type": "mlp", "hidden_sizes": [100, 100, 100], "activation": "relu", "init": {"scheme": "normal", "std": 1.0}},
        "dataset": {"name": "mnist", "split": "test"},
        "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 64, "steps": 300, "seed": 0},
    }
    result, series, _ = measure(base | {"clipping": {"mode": "none"}})
    layers = [f"layers.{i}" for i in range(3)] + ["head"]
    print(f"unclipped: {result.status} at step {result.diverged_at_step}")
    print(f"  grad_norm_total: {rounded(series[('grad_norm_total', None)])}")
    print(f"  loss: {rounded(series[('loss', None)])}")
    print(f"  backprop_norm at step 0: {rounded([series[('backprop_norm', l)][0] for l in layers])}")
    print(f"  grad_mean_abs at step 0: {rounded([series[('grad_mean_abs', l + '.weight')][0] for l in layers])}")
    result, series, _ = measure(base | {"clipping": {"mode": "norm", "threshold": 1.0}})
    norms, loss = series[("grad_norm_total", None)], series[("loss", None)]
    print(f"clipped: {result.status}; grad_norm_total at 0, 299: {rounded(norms[[0, -1]])}, "
          f"log-normal spread {np.std(np.diff(np.log(norms))) / np.sqrt(2):.2f}; loss at 0, 299: {rounded(loss[[0, -1]])}")


def adding_runs() -> None:
    for kind in ("rnn", "lstm"):
        _, _, batches = measure({
            "model": {"type": kind, "hidden_size": 64, "num_layers": 1, "activation": "tanh"},
            "dataset": {"name": "adding", "seq_len": 50},
            "training": {"optimizer": "adam", "lr": 0.01, "batch_size": 64, "steps": 1500, "seed": 0},
            "clipping": {"mode": "norm", "threshold": 1.0},
            "logging": {"every": 10, "timesteps_every": 1},
        })
        hidden = np.concatenate([b.timesteps.hidden_grad_norm[:, 0, :] for b in batches if b.timesteps is not None])
        relative = np.median(hidden[-10:] / hidden[-10:, -1:], axis=0)  # (T,): median of the last ten records
        print(f"{kind}: median ‖dL/dh_t‖/‖dL/dh_T‖ over the last ten records, t = 0, 10, 20, 30, 40, 49: "
              f"{rounded(relative[[0, 10, 20, 30, 40, 49]])}")
        print(f"  timesteps back above 1e-3: {int((relative[:-1] >= 1e-3).sum())}")
        if kind == "lstm":
            cell = np.concatenate([b.timesteps.cell_grad_norm[:, 0, :] for b in batches if b.timesteps is not None])
            print(f"  ‖dL/dc_1‖/‖dL/dc_T‖: {rounded([np.median(cell[-10:, 0] / cell[-10:, -1])])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-adding", action="store_true", help="skip the two 1,500-step recurrent runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed_runs()
    exploding_runs()
    if not args.skip_adding:
        adding_runs()


if __name__ == "__main__":
    main()
