"""The renderers return real PNG images that change with the data."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread

from service.analysis.compare import MemberSeries, compare
from service.analysis.horizon import memory_horizons
from service.analysis.profile import depth_profile
from service.plots import render_compare, render_metric, render_profile, render_timesteps
from service.plots.canvas import PNG_MAGIC
from service.store.records import SeriesData
from tests.service.analysis.synthetic import exploding_run, mlp_run, recurrent_run


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    image = imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    return image


def _differ(a: bytes, b: bytes) -> bool:
    x, y = _decode(a), _decode(b)
    return x.shape != y.shape or float(np.abs(x - y).mean()) > 1e-3


def test_metric_curves_differ_between_sigmoid_and_relu() -> None:
    # One title for both: the pictures may differ only by what the curves show.
    sigmoid = render_metric(mlp_run("sigmoid").series["grad_mean_abs"], "grad_mean_abs", "seed-2x30")
    relu = render_metric(mlp_run("relu").series["grad_mean_abs"], "grad_mean_abs", "seed-2x30")
    assert _differ(sigmoid, relu)
    # Same data, same picture: rendering is deterministic.
    again = render_metric(mlp_run("sigmoid").series["grad_mean_abs"], "grad_mean_abs", "seed-2x30")
    assert sigmoid == again


def test_log_scale_can_be_switched_off_and_non_finite_values_render() -> None:
    series = exploding_run(clipping=False).series
    log = render_metric(series["grad_norm_total"], "grad_norm_total", "exploding")
    linear = render_metric(series["grad_norm_total"], "grad_norm_total", "exploding", log=False)
    assert _differ(log, linear)
    _decode(render_metric(series["loss"], "loss", "exploding"))


@pytest.mark.parametrize("values", [np.zeros(10), np.full(10, np.nan), -np.ones(10)])
def test_degenerate_series_render_without_warnings(values: np.ndarray) -> None:
    series = [SeriesData("layers.0.weight", 0, np.arange(10), values)]
    _decode(render_metric(series, "grad_mean_abs", "degenerate"))
    _decode(render_profile(depth_profile("grad_mean_abs", series), "degenerate"))


def test_empty_inputs_render_a_message() -> None:
    _decode(render_metric([], "grad_norm", "empty"))
    _decode(render_profile(depth_profile("grad_norm", []), "empty"))
    _decode(render_timesteps([], [], "empty"))


def test_profile_heatmap_differs_with_the_data() -> None:
    sigmoid = render_profile(depth_profile("grad_mean_abs", mlp_run("sigmoid").series["grad_mean_abs"], 100), "s")
    relu = render_profile(depth_profile("grad_mean_abs", mlp_run("relu").series["grad_mean_abs"], 100), "s")
    assert _differ(sigmoid, relu)


def test_timesteps_rnn_differs_from_lstm() -> None:
    pictures = []
    for kind in ("rnn", "lstm"):
        data = recurrent_run(kind).timesteps
        pictures.append(render_timesteps(data, memory_horizons(data), "adding-50"))  # one title for both
    assert _differ(*pictures)


def test_compare_with_bands() -> None:
    grid = {"model.activation": ["sigmoid", "relu"], "training.seed": [0, 1]}
    members = [
        MemberSeries(f"{a}{s}", f"{a}{s}", "succeeded", {"model.activation": a, "training.seed": s},
                     mlp_run(a, seed=s).series["grad_mean_abs"][0])
        for a in grid["model.activation"] for s in grid["training.seed"]
    ]
    png = render_compare(compare("grad_mean_abs", "layers.0.weight", grid, members), "activations")
    one_seed = render_compare(compare("grad_mean_abs", "layers.0.weight", grid, members[::2]), "activations")
    assert _differ(png, one_seed)
