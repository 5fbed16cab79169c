"""Path and query parameters shared by the routes, each with every bound the server checks.

Strings are `SafeStr` (no control characters: a NUL would be a 500 on PostgreSQL and is
refused on every store alike) with a maximum length; integers stay within signed 64 bits
(what the stores hold); `max_points` is bounded by the app's `limits.max_points`, which
the published schema states (service/api/openapi.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import Field

from service.schemas.limits import INT64_MAX, AtMost
from service.schemas.text import SafeStr

ID_MAX_LENGTH = 64  # ids are 32 hex digits; longer is certainly unknown
NAME_MAX_LENGTH = 200  # the width of the name and layer columns
METRIC_MAX_LENGTH = 64  # the width of the metric column

ExperimentId = Annotated[SafeStr, Path(max_length=ID_MAX_LENGTH, description="The experiment's id.")]
SweepId = Annotated[SafeStr, Path(max_length=ID_MAX_LENGTH, description="The sweep's id.")]
ReproductionRunId = Annotated[SafeStr, Path(max_length=ID_MAX_LENGTH, description="The reproduction run's id.")]

STEP_RANGE = "step_min ≤ step_max (422 otherwise)."
StepMin = Annotated[
    int | None, Query(ge=0, le=INT64_MAX, description=f"First step, inclusive; {STEP_RANGE}")
]
StepMax = Annotated[
    int | None, Query(ge=0, le=INT64_MAX, description=f"Last step, inclusive; {STEP_RANGE}")
]
Layers = Annotated[
    list[Annotated[SafeStr, Field(max_length=NAME_MAX_LENGTH)]] | None,
    Query(description="Repeat to pick layers; default all, input → output."),
]
OneLayer = Annotated[
    SafeStr | None,
    Query(max_length=NAME_MAX_LENGTH, description="Default: each member's first (input-most) layer."),
]


def metric_query(description: str = "A probe name, e.g. grad_mean_abs.") -> Any:
    return Query(min_length=1, max_length=METRIC_MAX_LENGTH, description=description)


Metric = Annotated[SafeStr, metric_query()]
CompareMetric = Annotated[SafeStr, metric_query("A probe name; default loss (the PNG's default too).")]
PerLayerMetric = Annotated[SafeStr, metric_query("A per-layer probe.")]


def max_points_query(minimum: int, description: str) -> Any:
    """`max_points`: at least `minimum`, at most the app's `limits.max_points`."""
    return Annotated[
        int | None,
        Query(ge=minimum, description=f"{description} At most GRADWATCH_LIMIT_MAX_POINTS."),
        AtMost("max_points"),
    ]

NameContains = Annotated[
    SafeStr | None,
    Query(min_length=1, description="Only names containing this text."),
    AtMost("max_name_length", keyword="maxLength"),
]
Offset = Annotated[int, Query(ge=0, le=INT64_MAX, description="Skip this many (a 64-bit integer).")]
