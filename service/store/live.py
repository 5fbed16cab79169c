"""What a live view needs: the state of the watched experiments and the points and
gradient-through-time rows stored after a step, for many experiments in one query each.

The event stream's shared poller (service/api/live_feed.py) asks every fraction of a
second for every experiment any browser watches, so each function here reads all of
them at once: the cost of a look does not grow with the number of watchers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import Experiment, PointChunk, Series, TimestepChunk
from service.store.codec import decode_steps, decode_values
from service.store.experiments import to_record
from service.store.points import TIMESTEP_COLUMNS, timestep_data
from service.store.records import ExperimentRecord, TimestepData
from service.store.resume import AttemptRecord, list_attempts_of


@dataclass(frozen=True)
class NewPoints:
    """The points of one series stored after some step, steps ascending."""

    metric: str
    layer: str | None
    position: int
    steps: np.ndarray  # int64 (N,)
    values: np.ndarray  # float64 (N,)


@dataclass(frozen=True)
class Watched:
    """An experiment as its watchers see it: the row and its attempts."""

    record: ExperimentRecord
    attempts: list[AttemptRecord]


# What an experiment's watchers are told again for when it changes (see row_states).
RowState = tuple[str, int, int | None, bool, str | None]
ROW_STATE = (Experiment.status, Experiment.progress_step, Experiment.progress_total, Experiment.cancel_requested, Experiment.error)


def row_state(record: ExperimentRecord) -> RowState:
    return (record.status, record.progress_step, record.progress_total, record.cancel_requested, record.error)


def row_states(session: Session, experiment_ids: Sequence[str]) -> dict[str, RowState]:
    """Status, progress, total, cancel flag and error of these experiments (a deleted one is
    absent), in one narrow query. Attempts start and end only with a change of status, so
    an unchanged row state means an unchanged `experiment` event (but for the heartbeat)."""
    rows = session.execute(sa.select(Experiment.id, *ROW_STATE).where(Experiment.id.in_(experiment_ids))).all()
    session.commit()
    return {row[0]: tuple(row[1:]) for row in rows}  # type: ignore[misc]


def watched_experiments(session: Session, experiment_ids: Sequence[str]) -> dict[str, Watched]:
    """These experiments (a deleted one is absent) with their attempts: primary-key
    lookups, three queries whatever their number (rows, tags, attempts)."""
    if not experiment_ids:
        return {}
    rows = session.execute(
        sa.select(Experiment).where(Experiment.id.in_(experiment_ids)).execution_options(populate_existing=True)
    ).scalars()
    records = {row.id: to_record(row) for row in rows}
    attempts = list_attempts_of(session, list(records)) if records else {}  # commits
    return {key: Watched(record, attempts.get(key, [])) for key, record in records.items()}


def _after(column: sa.ColumnElement[int], owner: sa.ColumnElement[str], cursors: Mapping[str, int]) -> sa.ColumnElement[bool]:
    return sa.or_(*(sa.and_(owner == key, column > after) for key, after in cursors.items()))


def points_after_each(session: Session, cursors: Mapping[str, int]) -> dict[str, list[NewPoints]]:
    """For each experiment id → step in `cursors`, every series' points with a step past
    it, ordered by metric then input → output (experiments without any are absent).

    One query: only chunks whose last step is past their experiment's cursor are read, so
    a look costs what was written since the last one, not the runs' whole history."""
    if not cursors:
        return {}
    rows = session.execute(
        sa.select(Series.experiment_id, Series.metric, Series.layer, Series.position, PointChunk.steps, PointChunk.values)
        .join(PointChunk, PointChunk.series_id == Series.id)
        .where(_after(PointChunk.last_step, Series.experiment_id, cursors))
        .order_by(Series.experiment_id, Series.metric, Series.position, Series.layer, PointChunk.first_step)
    ).all()
    session.commit()  # end the read transaction
    parts: dict[tuple[str, str, str, int], tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for experiment_id, metric, layer, position, steps, values in rows:
        step_parts, value_parts = parts.setdefault((experiment_id, metric, layer, position), ([], []))
        step_parts.append(decode_steps(steps))
        value_parts.append(decode_values(values))
    found: dict[str, list[NewPoints]] = {}
    for (experiment_id, metric, layer, position), (step_parts, value_parts) in parts.items():
        steps, values = np.concatenate(step_parts), np.concatenate(value_parts)
        keep = steps > cursors[experiment_id]
        found.setdefault(experiment_id, []).append(NewPoints(metric, layer or None, position, steps[keep], values[keep]))
    return found


def points_after(session: Session, experiment_id: str, after_step: int) -> list[NewPoints]:
    """Every series' points of one experiment with step > `after_step` (see points_after_each)."""
    return points_after_each(session, {experiment_id: after_step}).get(experiment_id, [])


def timesteps_after_each(session: Session, cursors: Mapping[str, int]) -> dict[str, list[TimestepData]]:
    """For each experiment id → step, the gradient-through-time rows of the training steps
    past it, one matrix per recurrent layer (experiments without any are absent); one query."""
    if not cursors:
        return {}
    rows = session.execute(
        sa.select(TimestepChunk.experiment_id, *TIMESTEP_COLUMNS)
        .where(_after(TimestepChunk.last_step, TimestepChunk.experiment_id, cursors))
        .order_by(TimestepChunk.experiment_id, TimestepChunk.layer_index, TimestepChunk.first_step)
    ).all()
    session.commit()
    by_experiment: dict[str, list[sa.Row]] = {}
    for row in rows:
        by_experiment.setdefault(row.experiment_id, []).append(row)
    found: dict[str, list[TimestepData]] = {}
    for experiment_id, chunks in by_experiment.items():
        after = cursors[experiment_id]
        for data in timestep_data(chunks):
            keep = data.steps > after
            if np.any(keep):
                cell = None if data.cell_grad_norm is None else data.cell_grad_norm[keep]
                found.setdefault(experiment_id, []).append(
                    TimestepData(data.layer_index, data.steps[keep], data.timesteps, data.hidden_grad_norm[keep], cell)
                )
    return found
