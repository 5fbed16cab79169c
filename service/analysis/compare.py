"""Compare the members of a sweep on one metric: aligned on step, labelled, seed-averaged.

The seed's questions are comparisons (sigmoid or ReLU, clipping or not, RNN or LSTM), and
one seed is an anecdote: members that differ only in `training.seed` form a group whose
mean is drawn with a min–max band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.analysis.align import align, bucket_rows
from service.analysis.sweeps import SEED_PATH, member_label
from service.store.records import SeriesData


@dataclass(frozen=True)
class MemberSeries:
    """One sweep member's input to the comparison."""

    experiment_id: str
    name: str
    status: str
    params: Mapping[str, Any]  # dotted path → value
    series: SeriesData | None  # None when the member has no such series (yet)


@dataclass(frozen=True)
class ComparedMember:
    experiment_id: str
    name: str
    status: str
    label: str  # the varying parameters, seed included
    params: dict[str, Any]
    layer: str | None
    values: np.ndarray  # float64 (R,), on `Comparison.steps`; NaN where not measured


@dataclass(frozen=True)
class SeedGroup:
    """Members that differ only by seed: their mean and min–max band per step."""

    label: str  # the varying parameters, seed excluded ("" when only the seed varies)
    params: dict[str, Any]
    experiment_ids: list[str]
    seeds: list[Any]
    mean: np.ndarray  # float64 (R,) over the members with a finite value at that step
    minimum: np.ndarray
    maximum: np.ndarray
    count: np.ndarray  # int64 (R,): members with a finite value at that step


@dataclass(frozen=True)
class Comparison:
    metric: str
    layer: str | None
    varying: list[str]  # grid paths with more than one value
    steps: np.ndarray  # int64 (R,)
    members: list[ComparedMember]
    groups: list[SeedGroup]
    downsampled: bool


def drawn_layers(comparison: Comparison) -> list[str]:
    """The layers the curves come from, in first-seen order (empty for a global metric):
    runs of different models may each draw their own input-most layer."""
    return list(dict.fromkeys(m.layer for m in comparison.members if m.layer is not None))


def varying_paths(grid: Mapping[str, Sequence[Any]]) -> list[str]:
    return [path for path, values in grid.items() if len(values) > 1]


def compare(
    metric: str,
    layer: str | None,
    grid: Mapping[str, Sequence[Any]],
    members: Sequence[MemberSeries],
    max_points: int | None = None,
) -> Comparison:
    """Align every member's series on one step axis and aggregate each seed group."""
    varying = varying_paths(grid)
    label_keys = varying or list(grid)
    group_keys = [path for path in label_keys if path != SEED_PATH]

    with_data = [m for m in members if m.series is not None]
    steps, matrix, present = align(
        [m.series.steps for m in with_data if m.series is not None],
        [m.series.values for m in with_data if m.series is not None],
    )
    full_rows = len(steps)
    steps, matrix, present = bucket_rows(steps, matrix, present, max_points)
    column = {id(m): i for i, m in enumerate(with_data)}

    compared = []
    for member in members:
        if member.series is None:
            values = np.full(len(steps), np.nan)
        else:
            values = np.ascontiguousarray(matrix[:, column[id(member)]])
        compared.append(
            ComparedMember(
                experiment_id=member.experiment_id,
                name=member.name,
                status=member.status,
                label=member_label(member.params, label_keys),
                params=dict(member.params),
                layer=member.series.layer if member.series is not None else layer,
                values=values,
            )
        )

    groups: dict[tuple[str, ...], list[int]] = {}
    for index, member in enumerate(members):
        key = tuple(repr(member.params.get(path)) for path in group_keys)
        groups.setdefault(key, []).append(index)
    seed_groups = [
        _aggregate([compared[i] for i in indices], group_keys, len(steps)) for indices in groups.values()
    ]
    return Comparison(
        metric=metric,
        layer=layer,
        varying=varying,
        steps=steps,
        members=compared,
        groups=seed_groups,
        downsampled=len(steps) < full_rows,
    )


def _aggregate(members: list[ComparedMember], group_keys: list[str], n_rows: int) -> SeedGroup:
    stacked = np.stack([m.values for m in members], axis=1) if members else np.zeros((n_rows, 0))  # (R, M)
    finite = np.isfinite(stacked)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, stacked, 0.0).sum(axis=1) / count
    minimum = np.where(finite, stacked, np.inf).min(axis=1, initial=np.inf)
    maximum = np.where(finite, stacked, -np.inf).max(axis=1, initial=-np.inf)
    none = count == 0
    mean[none] = minimum[none] = maximum[none] = np.nan
    params = {path: members[0].params.get(path) for path in group_keys} if members else {}
    return SeedGroup(
        label=member_label(params) if params else "",
        params=params,
        experiment_ids=[m.experiment_id for m in members],
        seeds=[m.params.get(SEED_PATH) for m in members],
        mean=mean,
        minimum=minimum,
        maximum=maximum,
        count=count.astype(np.int64),
    )
