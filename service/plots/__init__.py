"""PNG pictures of an experiment or a sweep, rendered with matplotlib's Agg canvas."""

from service.plots.compare import render_compare
from service.plots.profile import render_profile
from service.plots.series import render_metric
from service.plots.timesteps import render_timesteps

__all__ = ["render_compare", "render_metric", "render_profile", "render_timesteps"]
