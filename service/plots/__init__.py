"""PNG pictures of an experiment or a sweep, rendered with matplotlib's Agg canvas."""

from service.plots.compare import render_compare
from service.plots.histograms import render_histograms
from service.plots.profile import render_profile
from service.plots.series import render_metric
from service.plots.sharpness import render_sharpness
from service.plots.timesteps import render_timesteps

__all__ = ["render_compare", "render_histograms", "render_metric", "render_profile", "render_sharpness", "render_timesteps"]
