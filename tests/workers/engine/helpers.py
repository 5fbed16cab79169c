"""Small helpers shared by the engine tests."""

from __future__ import annotations

import numpy as np

from workers.engine import ProbeBatch, RunConfig, RunResult, train


def run(config: RunConfig) -> tuple[RunResult, list[ProbeBatch]]:
    batches: list[ProbeBatch] = []
    result = train(config, batches.append)
    return result, batches


def series(batches: list[ProbeBatch], metric: str, layer: str | None = None) -> np.ndarray:
    return np.concatenate([batch.values[(metric, layer)] for batch in batches])


def steps(batches: list[ProbeBatch]) -> np.ndarray:
    return np.concatenate([batch.steps for batch in batches])
