"""What the pictures show, read back from the `Figure` each renderer builds: the axis scale,
the curves' data, their order and colours, the markers of non-finite values.

The renderers return PNG bytes; `figures` records the Figure handed to `png_bytes` (which
still runs and writes the PNG), so these tests look at the drawing, not at pixels.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from service.analysis.profile import depth_profile
from service.plots import canvas, render_metric, render_profile
from service.store.records import SeriesData
from tests.service.analysis.synthetic import PARAMETERS, exploding_run, mlp_run


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Figure]]:
    """Every Figure rendered during the test, in order."""
    import service.plots.compare
    import service.plots.profile
    import service.plots.series
    import service.plots.timesteps

    drawn: list[Figure] = []

    def recording_png_bytes(fig: Figure) -> bytes:
        drawn.append(fig)
        return canvas.png_bytes(fig)

    for module in (service.plots.series, service.plots.profile, service.plots.timesteps, service.plots.compare):
        monkeypatch.setattr(module, "png_bytes", recording_png_bytes)
    yield drawn


def curves(fig: Figure) -> list[Line2D]:
    """The data lines of the only axes (not the non-finite markers)."""
    (ax,) = fig.axes
    return [line for line in ax.get_lines() if line.get_marker() in ("None", None, "")]


def luminance(colour: tuple[float, ...]) -> float:
    red, green, blue = colour[:3]
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_gradient_magnitudes_are_log_scaled_by_default_and_loss_is_not(figures: list[Figure]) -> None:
    run = mlp_run("sigmoid")
    render_metric(run.series["grad_mean_abs"], "grad_mean_abs", "t")
    render_metric(run.series["grad_mean_abs"], "grad_mean_abs", "t", log=False)
    render_metric(run.series["loss"], "loss", "t")
    render_metric(run.series["loss"], "loss", "t", log=True)
    assert [fig.axes[0].get_yscale() for fig in figures] == ["log", "linear", "linear", "log"]
    assert figures[0].axes[0].get_ylabel() == "grad_mean_abs (log)"


def test_curves_are_the_data_in_depth_order_dark_to_light(figures: list[Figure]) -> None:
    series = mlp_run("sigmoid").series["grad_mean_abs"]
    render_metric(list(reversed(series)), "grad_mean_abs", "t")  # order given must not matter
    (fig,) = figures
    lines = curves(fig)
    assert [line.get_label() for line in lines] == list(PARAMETERS)  # input → output
    legend = fig.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == list(PARAMETERS)
    assert legend.get_title().get_text() == "input → output"
    for line, one in zip(lines, series, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), one.steps)
        np.testing.assert_array_equal(line.get_ydata(), one.values)
        assert line.get_linestyle() == ("--" if one.layer.endswith("bias") else "-")
    # Colours along viridis from dark (input) to light (output).
    expected = colormaps["viridis"](np.linspace(0.0, 0.85, len(series)))
    for line, colour in zip(lines, expected, strict=True):
        np.testing.assert_allclose(to_rgba(line.get_color()), colour)
    brightness = [luminance(to_rgba(line.get_color())) for line in lines]
    assert brightness == sorted(brightness) and brightness[0] < 0.5 * brightness[-1]


def test_non_finite_values_break_the_curve_and_get_a_marker(figures: list[Figure]) -> None:
    run = exploding_run(clipping=False)  # Inf at steps 8 and 10, NaN at step 11
    (norms,) = run.series["grad_norm_total"]
    bad = ~np.isfinite(norms.values)
    assert norms.steps[bad].tolist() == [8, 10, 11]
    render_metric(run.series["grad_norm_total"], "grad_norm_total", "t")
    (fig,) = figures
    (ax,) = fig.axes
    (line,) = curves(fig)
    y = np.asarray(line.get_ydata(), dtype=float)
    np.testing.assert_array_equal(y[~bad], norms.values[~bad])
    assert np.isnan(y[bad]).all(), "a non-finite value is a gap, not a point"
    (marker,) = [mark for mark in ax.get_lines() if mark.get_marker() == "v"]
    np.testing.assert_array_equal(marker.get_xdata(), [8, 10, 11])
    assert to_rgba(marker.get_color()) == to_rgba("crimson")
    assert marker.get_label() == "non-finite"
    assert ax.get_yscale() == "log"


def test_finite_runs_have_no_non_finite_marker(figures: list[Figure]) -> None:
    render_metric(mlp_run("relu").series["grad_norm_total"], "grad_norm_total", "t")
    assert [mark for mark in figures[0].axes[0].get_lines() if mark.get_marker() == "v"] == []


def test_profile_heatmap_holds_the_matrix_input_at_the_bottom(figures: list[Figure]) -> None:
    series = mlp_run("sigmoid", n_steps=20).series["grad_mean_abs"]
    weights = [one for one in series if one.layer.endswith("weight")]
    profile = depth_profile("grad_mean_abs", weights)
    render_profile(profile, "t")
    (fig, ) = figures
    ax = fig.axes[0]
    (mesh,) = ax.collections
    shown = np.asarray(mesh.get_array()).reshape(len(weights), -1)  # (L, R): a row per layer
    np.testing.assert_allclose(shown, np.stack([one.values for one in weights]))
    assert [label.get_text() for label in ax.get_yticklabels()] == [one.layer for one in weights]
    assert type(mesh.norm).__name__ == "LogNorm"


def test_a_series_with_positions_out_of_order_is_sorted_by_depth(figures: list[Figure]) -> None:
    steps = np.arange(3)
    shuffled = [SeriesData("c", 2, steps, np.full(3, 3.0)), SeriesData("a", 0, steps, np.full(3, 1.0)),
                SeriesData("b", 1, steps, np.full(3, 2.0))]
    render_metric(shuffled, "act_mean", "t")
    assert [line.get_label() for line in curves(figures[0])] == ["a", "b", "c"]
