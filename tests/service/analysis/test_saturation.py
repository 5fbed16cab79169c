"""The saturation finding from pre-activation histograms: exact counts from the bin edges,
the bound of each activation, and no finding where the activation cannot saturate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.analysis.diagnosis import diagnose
from service.analysis.diagnosis_records import DiagnosisInput
from service.analysis.saturation import derivative_at, derivative_bound, saturation_summary
from service.config import DiagnosisThresholds
from service.store.histograms import HistogramData
from service.store.records import SeriesData

THRESHOLDS = DiagnosisThresholds()
EDGES = np.linspace(-8.0, 8.0, 129)  # the engine's act_pre bins (workers/engine/histograms.py)


def _histogram(layer: str, samples: list[np.ndarray], steps: list[int] | None = None) -> HistogramData:
    """The engine's columns of each step's values, with np.histogram: zero, below, bins, above, non-finite."""
    counts, special = [], {name: [] for name in ("zero", "below", "above", "nonfinite")}
    for values in samples:
        finite = values[np.isfinite(values)]
        nonzero = finite[finite != 0]
        inside, _ = np.histogram(nonzero[(nonzero >= -8) & (nonzero < 8)], bins=EDGES)
        counts.append(inside)
        special["zero"].append(finite.size - nonzero.size)
        special["below"].append(int((nonzero < -8).sum()))
        special["above"].append(int((nonzero >= 8).sum()))
        special["nonfinite"].append(values.size - finite.size)
    steps = steps if steps is not None else list(range(len(samples)))
    return HistogramData(
        "act_pre", layer, np.asarray(steps, dtype=np.int64), EDGES, np.asarray(counts, dtype=np.int64),
        {name: np.asarray(column, dtype=np.int64) for name, column in special.items()},
    )  # fmt: skip


def _spec(activation: str, model_type: str = "mlp") -> dict:
    return {"model": {"type": model_type, "activation": activation, "init": {"scheme": "normal", "std": 1.0}}}


def test_bounds_are_where_the_derivative_falls_to_the_threshold() -> None:
    for activation in ("sigmoid", "tanh", "softsign"):
        bound = derivative_bound(activation, 0.05)
        assert bound is not None and derivative_at(activation, bound) == pytest.approx(0.05)
    assert derivative_bound("sigmoid", 0.05) == pytest.approx(4.3565, abs=1e-4)  # σ' = 0.0125 = 0.05 · ¼
    sigma = 1 / (1 + math.exp(-4.3565))
    assert sigma * (1 - sigma) == pytest.approx(0.0125, rel=1e-3)
    assert derivative_bound("tanh", 0.05) == pytest.approx(2.1783, abs=1e-4)
    assert derivative_bound("relu", 0.05) is None and derivative_bound("gelu", 0.05) is None
    with pytest.raises(ValueError, match="saturation_derivative"):
        derivative_bound("tanh", 1.5)


def test_the_fraction_counts_every_value_beyond_the_first_edge_past_the_bound_exactly() -> None:
    rng = np.random.default_rng(0)
    values = [rng.normal(0, s, 20_000) for s in (1.0, 4.0, 20.0)]  # calm, saturating, mostly beyond ±8
    values[1][:7] = np.nan
    summary = saturation_summary([_histogram("layers.0", values)], _spec("sigmoid"), THRESHOLDS)
    assert summary is not None
    [layer] = summary.layers
    assert layer.counting_edge == 4.375 and layer.derivative_at_edge < 0.05  # 35/8: the edge after 4.357
    for got, sample in zip(layer.per_step.values, values):
        finite = sample[np.isfinite(sample)]
        assert got == (np.abs(finite) >= 4.375).sum() / finite.size  # exact, NaN left out
    assert layer.at_start < 0.001 and 0.2 < layer.per_step.values[1] < 0.3 and layer.maximum > 0.8
    assert layer.nonfinite == 7 and layer.maximum_step == 2
    assert (layer.steps_saturated, layer.first_step_saturated, layer.last_step_saturated) == (1, 2, 2)


def test_a_saturated_layer_is_a_finding_with_its_steps_and_remedies() -> None:
    rng = np.random.default_rng(1)
    calm = _histogram("layers.0", [rng.normal(0, 0.5, 5000) for _ in range(3)], [0, 10, 20])
    hot = _histogram("layers.1", [rng.normal(0, 10, 5000) for _ in range(3)], [0, 10, 20])
    data = DiagnosisInput(
        spec=_spec("tanh"),
        series={"loss": [SeriesData(None, -1, np.arange(30), np.linspace(2.3, 2.0, 30))]},
        status="succeeded",
        activation_histograms=[calm, hot],
    )
    diagnosis = diagnose(data, THRESHOLDS)
    [finding] = [f for f in diagnosis.findings if f.kind == "saturation"]
    assert list(finding.evidence["layers"]) == ["layers.1"]  # the calm layer is measured, not reported
    assert finding.evidence["layers"]["layers.1"]["first_step"] == 0 and finding.evidence["counting_edge"] == 2.25
    assert finding.evidence["threshold_fraction"] == THRESHOLDS.saturation_fraction
    assert "layers.1" in finding.message and "|s| ≥ 2.25" in finding.message
    assert diagnosis.saturation is not None and [one.layer for one in diagnosis.saturation.layers] == ["layers.0", "layers.1"]
    changes = [r.spec_changes for r in diagnosis.remedies if r.problem == "saturation"]
    assert {"model.activation": "relu", "model.init.scheme": "kaiming_normal"} in changes
    assert {"model.init.scheme": "xavier_uniform"} in changes
    assert diagnosis.thresholds["saturation_derivative"] == 0.05


@pytest.mark.parametrize(("activation", "model_type"), [("relu", "mlp"), ("gelu", "mlp"), ("tanh", "rnn")])
def test_no_saturation_where_it_is_not_defined_or_not_computable(activation: str, model_type: str) -> None:
    wide = _histogram("layers.0", [np.random.default_rng(2).normal(0, 10, 5000)])
    assert saturation_summary([wide], _spec(activation, model_type), THRESHOLDS) is None


def test_bins_that_end_before_the_bound_are_not_counted() -> None:
    narrow = _histogram("layers.0", [np.full(10, 1.0)])
    narrow = HistogramData("act_pre", "layers.0", narrow.steps, np.linspace(-2.0, 2.0, 129), narrow.counts, narrow.special)
    assert saturation_summary([narrow], _spec("sigmoid"), THRESHOLDS) is None
