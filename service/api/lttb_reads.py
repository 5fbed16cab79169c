"""`agg=lttb` of a long series: LTTB over its chunks' representative points (MinMaxLTTB).

Exact LTTB (Steinarsson 2013) chooses, bucket after bucket, the point forming the largest
triangle with the previous choice and the next bucket's mean point; every choice depends on
every point, so it cannot come from per-chunk aggregates. MinMaxLTTB (Van Der Donckt,
Van Der Donckt, Rademaker & Van Hoecke 2023, the default of tsdownsample and
plotly-resampler for large series) first preselects each small bucket's minimum and
maximum and runs LTTB on those; at four preselected points per output point or more the
authors find the chart indistinguishable from LTTB's. The chunks' stored representatives
(service/store/summaries.py: each chunk's first, last, minimum and maximum, and its first
non-finite points) are that preselection with buckets of one chunk, already on disk.

So a series whose representatives in the step range number more than
`PRESELECTION_RATIO` × `max_points` is thinned from them, read from a few bytes per chunk;
any other series by exact LTTB over every point. What the result guarantees either way, as
`downsample` documents: every returned point is a recorded point at its own step; the
first and last points, the global maximum and minimum, the first NaN, +Inf and -Inf, and
the largest and smallest finite values are kept (the representatives hold them all). From
representatives, non-finite runs are marked at chunk resolution: a chunk's first
non-finite point is marked when it starts a run, a later run inside the same chunk is not.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from service import store
from service.analysis.downsample import downsample
from service.api.bucket_reads import thinned_in_order
from service.store.records import SeriesData
from service.store.summaries import read_representatives

# Preselected points per output point below which LTTB reads every point: MinMaxLTTB's
# default `minmax_ratio` (tsdownsample), which its paper finds enough to match LTTB.
PRESELECTION_RATIO = 4


def read_lttb_thinned(
    session: Session, experiment_id: str, metric: str, layers: Sequence[str | None] | None,
    step_min: int | None, step_max: int | None, max_points: int,
) -> list[SeriesData]:  # fmt: skip
    """The series of `metric` (all layers, or `layers`) thinned to `max_points` by LTTB."""
    found = store.find_series(session, experiment_id, metric, layers)
    preselected = read_representatives(
        session, [ref.id for ref in found], step_min, step_max, PRESELECTION_RATIO * max_points
    )
    thinned = {
        series_id: downsample(steps, values, max_points, "lttb") for series_id, (steps, values) in preselected.items()
    }
    return thinned_in_order(session, experiment_id, metric, found, thinned, step_min, step_max, max_points, "lttb")
