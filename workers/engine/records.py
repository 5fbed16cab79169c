"""What the engine hands out: batches of probe records, and the result of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .baselines import TrivialBaseline

MetricKey = tuple[str, "str | None"]  # (metric, layer); layer None for global metrics


@dataclass(frozen=True)
class TimestepBatch:
    """Gradients through time of a recurrent model, for the steps of one flush."""

    steps: np.ndarray  # int64 (S,): training steps, ascending
    timesteps: np.ndarray  # int64 (T',): recorded timestep indices, 0-based, first and last included
    hidden_grad_norm: np.ndarray  # float64 (S, L, T'): ‖∂L/∂h_t‖ for each recurrent layer
    cell_grad_norm: np.ndarray | None  # float64 (S, L, T'): ‖∂L/∂c_t‖ (LSTM), else None


@dataclass(frozen=True)
class HistogramBatch:
    """Histograms of the steps of one flush (workers/engine/histograms.py).

    Row k of `counts` is one (metric, layer) histogram: column 0 counts exact zeros, column 1
    the finite values below the first edge, columns 2 … B+1 the bins [edges[i], edges[i+1]),
    column B+2 the finite values at or beyond the last edge, column B+3 NaN and ±Inf, so every
    row sums to the number of elements it describes.
    """

    steps: np.ndarray  # int64 (S,): training steps, ascending
    keys: tuple[tuple[str, str], ...]  # (metric, layer) of each row: grad_log10_abs, act_pre, act_out
    counts: np.ndarray  # int64 (S, K, B + 4)
    edges: dict[str, np.ndarray]  # metric → float64 (B + 1,): log10|g| for gradients, values for activations


@dataclass(frozen=True)
class ProbeBatch:
    """One flush: every recorded step since the previous flush."""

    steps: np.ndarray  # int64 (S,): training steps recorded in this batch, ascending
    values: dict[tuple[str, str | None], np.ndarray]  # (metric, layer) → float64 (S,), NaN/Inf kept
    layers: tuple[str, ...]  # every layer name the run emits, input → output
    timesteps: TimestepBatch | None  # recurrent models with timestep probes, else None
    # Series measured on a schedule of their own (hessian_max_eig, hessian_trace): (metric,
    # layer) → (steps int64 (K,), values float64 (K,)), steps within this batch's range.
    sparse_values: dict[tuple[str, str | None], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    histograms: HistogramBatch | None = None


@dataclass(frozen=True)
class RunResult:
    status: str  # "succeeded" | "diverged" | "cancelled"
    steps_done: int  # optimisation steps whose records were kept
    final_loss: float | None  # training loss at the last step done (NaN/Inf when diverged)
    final_accuracy: float | None  # training-batch accuracy at the last recorded step; None for regression
    diverged_at_step: int | None  # the first step whose loss was not finite
    test_loss: float | None  # on the held-out split after training; None unless succeeded
    test_accuracy: float | None  # ditto; None for regression
    baseline: TrivialBaseline | None = None  # the input-blind predictor's losses on this run's data
