"""What a live view needs: the points stored after a step, for every series of an
experiment at once (the event stream, service/api/routes/events.py, asks every fraction of a
second while a run is going)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import PointChunk, Series
from service.store.codec import decode_steps, decode_values


@dataclass(frozen=True)
class NewPoints:
    """The points of one series stored after some step, steps ascending."""

    metric: str
    layer: str | None
    position: int
    steps: np.ndarray  # int64 (N,)
    values: np.ndarray  # float64 (N,)


def points_after(session: Session, experiment_id: str, after_step: int) -> list[NewPoints]:
    """Every series' points with step > `after_step`, ordered by metric then input → output.

    One query: only chunks whose last step is past the cursor are read, so a live view
    costs what was written since its last look, not the run's whole history."""
    rows = session.execute(
        sa.select(Series.metric, Series.layer, Series.position, PointChunk.steps, PointChunk.values)
        .join(PointChunk, PointChunk.series_id == Series.id)
        .where(Series.experiment_id == experiment_id, PointChunk.last_step > after_step)
        .order_by(Series.metric, Series.position, Series.layer, PointChunk.first_step)
    ).all()
    session.commit()  # end the read transaction
    parts: dict[tuple[str, str, int], tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for metric, layer, position, steps, values in rows:
        step_parts, value_parts = parts.setdefault((metric, layer, position), ([], []))
        step_parts.append(decode_steps(steps))
        value_parts.append(decode_values(values))
    found = []
    for (metric, layer, position), (step_parts, value_parts) in parts.items():
        steps, values = np.concatenate(step_parts), np.concatenate(value_parts)
        keep = steps > after_step
        found.append(NewPoints(metric, layer or None, position, steps[keep], values[keep]))
    return found
