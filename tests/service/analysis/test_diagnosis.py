"""The verdict on the seed's three comparisons, from engine-like probe records."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.diagnosis import DiagnosisInput, diagnose
from service.config import DiagnosisThresholds
from service.store.records import SeriesData
from tests.service.analysis.synthetic import (
    EXPLODING_DIVERGED_AT,
    EXPLODING_NORMS,
    RNN_HORIZON,
    SEED_RATIO,
    SyntheticRun,
    exploding_run,
    mlp_run,
    recurrent_run,
)

THRESHOLDS = DiagnosisThresholds()


def _diagnose(run: SyntheticRun, thresholds: DiagnosisThresholds = THRESHOLDS):
    data = DiagnosisInput(spec=run.spec, series=run.series, timesteps=run.timesteps, status=run.status, result=run.result)
    return diagnose(data, thresholds, max_points=100)


def test_sigmoid_vanishes_with_depth_and_relu_does_not() -> None:
    sigmoid = _diagnose(mlp_run("sigmoid"))
    assert sigmoid.verdict == "vanishing"
    [finding] = [f for f in sigmoid.findings if f.kind == "vanishing_depth"]
    assert finding.evidence["first_layer"] == "layers.0.weight"
    assert finding.evidence["last_layer"] == "layers.2.weight"
    assert finding.evidence["step"] == 0
    assert finding.evidence["ratio"] == pytest.approx(SEED_RATIO["sigmoid"][0], rel=1e-6)
    assert finding.evidence["threshold"] == 0.1
    assert sigmoid.depth_ratio is not None
    assert sigmoid.depth_ratio.decay_per_layer_at_start == pytest.approx(SEED_RATIO["sigmoid"][0] ** 0.5, rel=1e-6)
    # It recovers (measured: 0.25 by step 8, 0.065 by step 199): only the start tells.
    assert sigmoid.depth_ratio.median > 3 * SEED_RATIO["sigmoid"][0]
    [remedy] = sigmoid.remedies
    assert remedy.spec_changes == {"model.activation": "relu"} and "Glorot" in remedy.reference

    for activation in ("relu", "tanh"):
        other = _diagnose(mlp_run(activation))
        assert other.verdict == "healthy", other.findings
        assert other.depth_ratio is not None
        assert other.depth_ratio.at_start == pytest.approx(SEED_RATIO[activation][0], rel=1e-6)
        assert other.remedies == []


def test_biases_are_not_used_for_the_depth_ratio() -> None:
    diagnosis = _diagnose(mlp_run("sigmoid"))
    assert diagnosis.depth_ratio is not None and diagnosis.depth_ratio.n_layers == 3
    assert [a.lower for a in diagnosis.depth_ratio.adjacent] == ["layers.0.weight", "layers.1.weight"]


def test_per_layer_medians_cover_parameters_and_probe_layers() -> None:
    diagnosis = _diagnose(mlp_run("relu"))
    names = [layer.layer for layer in diagnosis.layers]
    assert names[0] in ("layers.0.weight", "layers.0")
    by_name = {layer.layer: layer for layer in diagnosis.layers}
    run = mlp_run("relu")
    expected = float(np.median(run.series["grad_mean_abs"][0].values))
    assert by_name["layers.0.weight"].medians["grad_mean_abs"] == pytest.approx(expected)
    assert "backprop_norm" in by_name["layers.0"].medians


def test_unclipped_normal_init_relu_explodes() -> None:
    diagnosis = _diagnose(exploding_run(clipping=False))
    assert diagnosis.verdict == "exploding"
    # Measured: the gradient norm is Inf at steps 8 and 10, everything NaN at step 11.
    assert diagnosis.nonfinite.first_step == 8 and diagnosis.nonfinite.steps == 3
    assert set(diagnosis.nonfinite.metrics) == {"loss", "grad_norm_total", "grad_nonfinite"}
    assert diagnosis.nonfinite.diverged_at_step == EXPLODING_DIVERGED_AT
    kinds = [f.kind for f in diagnosis.findings]
    assert kinds.count("exploding") == 3  # non-finite, norm growth, growth through depth
    clip = next(r for r in diagnosis.remedies if r.spec_changes.get("clipping.mode") == "norm")
    # Pascanu et al. 2013: half to ten times the average norm before the explosion (the
    # measured 4,204 at step 0).
    assert f"{0.5 * EXPLODING_NORMS[0]:.1e}" in clip.action and f"{10 * EXPLODING_NORMS[0]:.1e}" in clip.action
    assert "Pascanu" in clip.reference
    assert any(r.spec_changes.get("model.init.scheme") == "kaiming_normal" for r in diagnosis.remedies)


def test_clipped_normal_init_relu_is_controlled_not_exploding() -> None:
    diagnosis = _diagnose(exploding_run(clipping=True))
    assert diagnosis.verdict != "exploding"
    assert diagnosis.verdict == "healthy"
    assert diagnosis.grad_norm is not None
    assert diagnosis.grad_norm.clipped_steps == 300 and diagnosis.grad_norm.pre_clip_median > 1.0
    assert diagnosis.grad_norm.post_clip_max == 1.0
    kinds = {f.kind for f in diagnosis.findings}
    assert "clipping_controls" in kinds
    # Its first layer's |∂L/∂W| is small (0.064× the last) but ‖∂L/∂s‖ grows toward the
    # input: not called vanishing.
    assert "small_first_layer_gradient" in kinds and "vanishing_depth" not in kinds


def test_clipping_does_not_excuse_a_non_finite_run() -> None:
    run = exploding_run(clipping=True)
    loss = run.series["loss"][0]
    values = loss.values.copy()
    values[150] = np.nan
    run.series["loss"] = [SeriesData(None, -1, loss.steps, values)]
    diagnosis = _diagnose(run)
    assert diagnosis.verdict == "exploding" and diagnosis.nonfinite.first_step == 150


def test_unclipped_norm_growth_alone_is_exploding() -> None:
    run = mlp_run("relu")
    norms = run.series["grad_norm_total"][0]
    grown = norms.values * np.geomspace(1, 1e5, len(norms.values))
    run.series["grad_norm_total"] = [SeriesData(None, -1, norms.steps, grown)]
    diagnosis = _diagnose(run)
    assert diagnosis.verdict == "exploding"
    growth = next(f for f in diagnosis.findings if "grew" in f.message)
    assert growth.evidence["growth"] > 1e3 and growth.evidence["pre_clip_max_step"] == int(norms.steps[np.argmax(grown)])


def test_rnn_horizon_is_short_and_lstm_spans_the_sequence() -> None:
    rnn, lstm = _diagnose(recurrent_run("rnn")), _diagnose(recurrent_run("lstm"))
    assert rnn.verdict == "vanishing" and lstm.verdict == "healthy"
    [rnn_horizon], [lstm_horizon] = rnn.horizon, lstm.horizon
    assert rnn_horizon.final == RNN_HORIZON and lstm_horizon.final == 49 == lstm_horizon.sequence_timesteps
    assert lstm_horizon.final > rnn_horizon.final
    assert rnn_horizon.final_first_to_last < 1e-4 < 1e-2 < lstm_horizon.final_first_to_last
    [remedy] = rnn.remedies
    assert remedy.spec_changes == {"model.type": "lstm", "model.forget_bias": 1.0}
    assert "Gers" in remedy.reference and "Jozefowicz" in remedy.reference
    # Recurrent models are not judged on the MLP depth ratio.
    assert not any(f.kind == "vanishing_depth" for f in rnn.findings)


def test_thresholds_are_configurable_and_reported() -> None:
    strict = DiagnosisThresholds(vanishing_depth_ratio=0.6)
    relu = _diagnose(mlp_run("relu"), strict)
    assert relu.verdict == "vanishing" and relu.thresholds["vanishing_depth_ratio"] == 0.6
    lenient = DiagnosisThresholds(horizon_min_fraction=0.5 * RNN_HORIZON / 49)  # below the RNN's 7 of 49
    assert _diagnose(recurrent_run("rnn"), lenient).verdict == "healthy"


def test_an_experiment_without_data_has_no_verdict_and_nothing_to_report() -> None:
    diagnosis = diagnose(DiagnosisInput(spec={"model": {"type": "mlp"}}, series={}), THRESHOLDS)
    assert diagnosis.verdict == "no_data"
    assert diagnosis.depth_ratio is None and diagnosis.grad_norm is None and diagnosis.horizon == []


def test_per_step_ratio_is_downsampled_with_its_extremes() -> None:
    run = mlp_run("sigmoid", n_steps=1000)
    diagnosis = diagnose(DiagnosisInput(spec=run.spec, series=run.series), THRESHOLDS, max_points=50)
    assert diagnosis.depth_ratio is not None
    per_step = diagnosis.depth_ratio.per_step
    assert len(per_step.steps) <= 50 and per_step.steps[0] == 0 and per_step.steps[-1] == 999
    assert per_step.values.min() == pytest.approx(diagnosis.depth_ratio.minimum)


@pytest.mark.parametrize("seed", range(5))
def test_layers_sharing_their_steps_give_the_ratio_intersect1d_gives(seed: int) -> None:
    """The depth ratio skips intersect1d when two layers have the same steps; with an extra
    step on the last layer (so intersect1d runs) the ratio over the shared steps is the same."""
    from service.analysis.gradient_stats import depth_ratio_summary

    rng = np.random.default_rng(seed)
    steps = np.cumsum(rng.integers(1, 4, 3000)).astype(np.int64)
    values = np.exp(rng.normal(0, 2, size=(3, len(steps))))
    values[rng.integers(3, size=10), rng.integers(len(steps), size=10)] = rng.choice([np.nan, np.inf, -np.inf, 0.0], 10)
    shared = [SeriesData(f"layers.{i}.weight", i, steps, values[i]) for i in range(3)]
    extra = np.append(steps, steps[-1] + 5)
    uneven = [*shared[:2], SeriesData("layers.2.weight", 2, extra, np.append(values[2], 1.0))]
    fast = depth_ratio_summary("grad_mean_abs", shared, THRESHOLDS, 200)
    slow = depth_ratio_summary("grad_mean_abs", uneven, THRESHOLDS, 200)
    assert fast is not None and slow is not None
    np.testing.assert_array_equal(fast.per_step.steps, slow.per_step.steps)
    np.testing.assert_array_equal(fast.per_step.values, slow.per_step.values)
    fast_fields = {k: v for k, v in fast.__dict__.items() if k != "per_step"}
    slow_fields = {k: v for k, v in slow.__dict__.items() if k != "per_step"}
    assert repr(fast_fields) == repr(slow_fields)  # repr: NaN equals NaN
