"""The sharpness against gradient descent's stability limit, and the edge-of-stability finding."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.diagnosis import DiagnosisInput, diagnose
from service.analysis.sharpness import stability_factor
from service.config import DiagnosisThresholds
from service.store.records import SeriesData

THRESHOLDS = DiagnosisThresholds()


def _run(sharpness: np.ndarray, lr: float = 0.1, optimizer: str = "sgd", momentum: float = 0.9) -> DiagnosisInput:
    steps = np.arange(0, 10 * len(sharpness), 10, dtype=np.int64)
    every = np.arange(10 * len(sharpness), dtype=np.int64)
    spec = {
        "model": {"type": "mlp", "hidden_sizes": [32]},
        "training": {"optimizer": optimizer, "lr": lr, "momentum": momentum, "full_batch": True},
    }
    series = {
        "loss": [SeriesData(None, -1, every, np.linspace(1.0, 0.2, len(every)))],
        "lr": [SeriesData(None, -1, every, np.full(len(every), lr))],
        "hessian_max_eig": [SeriesData(None, -1, steps, sharpness.astype(np.float64))],
    }
    return DiagnosisInput(spec=spec, series=series, status="succeeded", result={})


def test_sharpness_that_rises_to_two_over_eta_is_at_the_edge_of_stability() -> None:
    # Progressive sharpening from 5 to 2/η = 20, then hovering just above it (Cohen et al. Fig. 1).
    sharpness = np.concatenate([np.linspace(5, 20, 30), 20.4 + 0.3 * np.sin(np.arange(30))])
    diagnosis = diagnose(_run(sharpness), THRESHOLDS)
    summary = diagnosis.sharpness
    assert summary is not None and summary.stability_factor == 2.0 and summary.final_limit == pytest.approx(20.0)
    assert summary.final_ratio == pytest.approx(np.median(sharpness[-6:]) / 20.0)
    at_limit = (1 - THRESHOLDS.edge_of_stability_tolerance) * 20.0
    assert summary.at_start == 5.0 and summary.first_step_at_limit == 10 * int(np.argmax(sharpness >= at_limit))
    [finding] = [f for f in diagnosis.findings if f.kind == "edge_of_stability"]
    assert finding.evidence["ratio"] == pytest.approx(summary.final_ratio) and "2/η" in finding.message


def test_sharpness_far_below_the_limit_is_no_finding() -> None:
    diagnosis = diagnose(_run(np.linspace(1, 5, 40)), THRESHOLDS)
    assert diagnosis.sharpness is not None and diagnosis.sharpness.final_ratio < 0.3
    assert not any(f.kind == "edge_of_stability" for f in diagnosis.findings)


def test_momentum_moves_the_limit_and_adam_has_none() -> None:
    assert stability_factor({"optimizer": "sgd", "momentum": 0.9}) == 2.0  # momentum applies to `momentum` only
    assert stability_factor({"optimizer": "momentum", "momentum": 0.9}) == pytest.approx(3.8)
    assert stability_factor({"optimizer": "adam"}) is None
    adam = diagnose(_run(np.full(20, 20.0), optimizer="adam"), THRESHOLDS)
    assert adam.sharpness is not None and adam.sharpness.final_ratio is None
    assert not any(f.kind == "edge_of_stability" for f in adam.findings)


def test_a_run_without_curvature_has_no_sharpness() -> None:
    data = _run(np.full(3, 1.0))
    del data.series["hessian_max_eig"]
    assert diagnose(data, THRESHOLDS).sharpness is None
