"""Which series an experiment has: its metrics, each metric's layers input → output, and
the stored series that hold them.

Global metrics have no layer; the unique key (experiment_id, metric, layer) needs a value
that is not NULL, so they are stored with layer '' (GLOBAL_LAYER) and read back as None."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import Series
from service.store.records import SeriesRef

GLOBAL_LAYER = ""


class SeriesCatalog:
    """Every series of one experiment, read in one query: what a series read validates its
    metric and layers against and then reads, without asking the database twice."""

    def __init__(self, rows: Sequence[tuple[str, SeriesRef]]) -> None:
        self._rows = rows  # (metric, ref), ordered by metric, then input → output

    @property
    def metrics(self) -> dict[str, list[str | None]]:
        """metric → its layers ordered input → output ([None] for a global metric)."""
        metrics: dict[str, list[str | None]] = {}
        for metric, ref in self._rows:
            metrics.setdefault(metric, []).append(ref.layer)
        return metrics

    def find(self, metric: str, layers: Sequence[str | None] | None = None) -> list[SeriesRef]:
        """As `find_series`: the series of `metric` (all its layers, or `layers`), input → output."""
        wanted = None if layers is None else set(layers)
        return [ref for name, ref in self._rows if name == metric and (wanted is None or ref.layer in wanted)]


# Built once, Core rows: every series read starts with it.
_SERIES = Series.__table__
_CATALOG = (
    sa.select(_SERIES.c.metric, _SERIES.c.id, _SERIES.c.layer, _SERIES.c.position)
    .where(_SERIES.c.experiment_id == sa.bindparam("experiment_id"))
    .order_by(_SERIES.c.metric, _SERIES.c.position, _SERIES.c.layer)
)


def series_catalog(session: Session, experiment_id: str) -> SeriesCatalog:
    rows = session.execute(_CATALOG, {"experiment_id": experiment_id})
    return SeriesCatalog([(row.metric, SeriesRef(row.id, row.layer or None, row.position)) for row in rows])


def list_metrics(session: Session, experiment_id: str) -> dict[str, list[str | None]]:
    """metric → its layers ordered input → output ([None] for a global metric)."""
    return series_catalog(session, experiment_id).metrics


def find_series(
    session: Session, experiment_id: str, metric: str, layers: Sequence[str | None] | None = None
) -> list[SeriesRef]:
    """The series of `metric` (all its layers, or `layers`), ordered input → output."""
    query = sa.select(Series.id, Series.layer, Series.position).where(
        Series.experiment_id == experiment_id, Series.metric == metric
    )
    if layers is not None:
        query = query.where(Series.layer.in_([layer or GLOBAL_LAYER for layer in layers]))
    rows = session.execute(query.order_by(Series.position, Series.layer))
    return [SeriesRef(row.id, row.layer or None, row.position) for row in rows]
