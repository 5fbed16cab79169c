"""What an experiment has stored, in four counts: the key of anything computed from its data.

Chunks are only ever inserted (INSERT … ON CONFLICT DO NOTHING: a retried batch, a
redelivered task or a run resumed from its checkpoint adds rows or nothing, and never
rewrites one), and rows go only with their experiment (ON DELETE CASCADE; experiment ids
are random and never reused). So an experiment's chunks at a later moment are a superset
of those at an earlier one, and a superset of the same size is the same set: equal counts
mean equal data, and no key needs a maximum or a checksum. A resumed run that re-records
steps adds chunks (with other first steps), which changes the count.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import HistogramChunk, PointChunk, Series, TimestepChunk


@dataclass(frozen=True)
class DataVersion:
    series: int  # rows of `series` (created with their first chunk, in the same transaction)
    point_chunks: int
    timestep_chunks: int
    histogram_chunks: int


def read_data_version(session: Session, experiment_id: str) -> DataVersion:
    """The experiment's counts, in one statement of four index-only counts (the primary
    keys of the chunk tables and the series' unique key all start with the experiment or
    its series), and ends the read transaction."""

    def count(table: type, *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
        return sa.select(sa.func.count()).select_from(table).where(*where).scalar_subquery()

    of_experiment = Series.experiment_id == experiment_id
    row = session.execute(
        sa.select(
            count(Series, of_experiment),
            sa.select(sa.func.count())
            .select_from(PointChunk)
            .join(Series, Series.id == PointChunk.series_id)
            .where(of_experiment)
            .scalar_subquery(),
            count(TimestepChunk, TimestepChunk.experiment_id == experiment_id),
            count(HistogramChunk, HistogramChunk.experiment_id == experiment_id),
        )
    ).one()
    session.commit()
    return DataVersion(*(int(value) for value in row))
