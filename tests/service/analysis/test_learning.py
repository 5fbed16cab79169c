"""The diagnosis reads the final loss against the task's trivial baseline, and says
`no_data` when nothing was recorded."""

from __future__ import annotations

import dataclasses

import pytest

from service.analysis.diagnosis import DiagnosisInput, diagnose
from service.config import DiagnosisThresholds
from tests.service.analysis.synthetic import recurrent_run

THRESHOLDS = DiagnosisThresholds()
# The adding problem's constant predictor on this run's data (workers/engine/baselines.py).
ADDING_BASELINE = {"predictor": "mean target", "loss": "mse", "train_loss": 0.1667, "test_loss": 0.1674, "chance_accuracy": None}


def _lstm(test_loss: float, late_train_loss: float):
    run = recurrent_run("lstm")
    loss = run.series["loss"][0]
    run.series["loss"] = [dataclasses.replace(loss, values=loss.values * 0 + late_train_loss)]
    result = {"test_loss": test_loss, "steps_done": 1000, "baseline": ADDING_BASELINE}
    return DiagnosisInput(spec=run.spec, series=run.series, timesteps=run.timesteps, status="succeeded", result=result)


def test_an_lstm_that_did_not_learn_the_adding_problem_is_not_healthy() -> None:
    diagnosis = diagnose(_lstm(test_loss=0.159, late_train_loss=0.161), THRESHOLDS)
    # Its gradient reaches all 49 timesteps back: no pathology, so the verdict is the loss's.
    assert diagnosis.horizon[0].final == 49
    assert diagnosis.verdict == "not_learning"
    [finding] = [f for f in diagnosis.findings if f.kind == "not_learning"]
    assert finding.evidence["split"] == "test"
    assert finding.evidence["ratio"] == pytest.approx(0.159 / 0.1674)
    assert finding.evidence["baseline_loss"] == 0.1674 and finding.evidence["threshold"] == 0.9
    assert "0.159" in finding.message and "mean target" in finding.message
    assert diagnosis.headline.startswith("not learning:") and "49 of 49" in diagnosis.headline
    assert diagnosis.learning is not None and diagnosis.learning.learned is False
    assert diagnosis.learning.train_ratio == pytest.approx(0.161 / 0.1667)
    assert [r.problem for r in diagnosis.remedies] == ["not_learning"]


def test_an_lstm_that_learned_is_healthy() -> None:
    diagnosis = diagnose(_lstm(test_loss=0.0005, late_train_loss=0.0006), THRESHOLDS)
    assert diagnosis.verdict == "healthy" and diagnosis.learning is not None and diagnosis.learning.learned
    assert not any(f.kind == "not_learning" for f in diagnosis.findings)


def test_a_vanishing_rnn_that_did_not_learn_says_both() -> None:
    run = recurrent_run("rnn")
    result = {"test_loss": 0.1677, "steps_done": 1000, "baseline": ADDING_BASELINE}
    data = DiagnosisInput(spec=run.spec, series=run.series, timesteps=run.timesteps, status="succeeded", result=result)
    diagnosis = diagnose(data, THRESHOLDS)
    # The gradient evidence names the cause, so it stays the verdict; the headline joins them.
    assert diagnosis.verdict == "vanishing"
    assert {f.kind for f in diagnosis.findings} >= {"not_learning", "vanishing_time"}
    assert diagnosis.headline.startswith("not learning") and "timesteps back" in diagnosis.headline


def test_the_threshold_is_a_setting() -> None:
    lenient = DiagnosisThresholds(not_learning_loss_ratio=0.5)
    assert diagnose(_lstm(test_loss=0.1, late_train_loss=0.1), THRESHOLDS).verdict == "healthy"
    assert diagnose(_lstm(test_loss=0.1, late_train_loss=0.1), lenient).verdict == "not_learning"


def test_without_a_test_loss_the_late_training_loss_is_judged() -> None:
    data = _lstm(test_loss=0.159, late_train_loss=0.165)
    data = dataclasses.replace(data, result={**data.result, "test_loss": None}, status="cancelled")
    diagnosis = diagnose(data, THRESHOLDS)
    assert diagnosis.verdict == "not_learning" and diagnosis.learning.judged_on == "train"


@pytest.mark.parametrize("status", ["queued", "running", "failed"])
def test_a_run_without_data_has_no_verdict_but_no_data(status: str) -> None:
    diagnosis = diagnose(DiagnosisInput(spec={"model": {"type": "lstm"}}, series={}, status=status), THRESHOLDS)
    assert diagnosis.verdict == "no_data"
    assert diagnosis.findings[0].kind == "no_data" and status in diagnosis.headline
    assert diagnosis.remedies == [] and diagnosis.learning is None


def test_a_run_stored_before_baselines_is_judged_on_its_gradient_alone() -> None:
    run = recurrent_run("lstm")
    data = DiagnosisInput(spec=run.spec, series=run.series, timesteps=run.timesteps, result={"test_loss": 0.159})
    diagnosis = diagnose(data, THRESHOLDS)
    assert diagnosis.verdict == "healthy" and diagnosis.learning is None
