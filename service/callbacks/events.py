"""The body a callback POSTs, built from what is stored when the run (or sweep) ended.

    {"id": "<event id>", "type": "experiment.ended", "created_at": "…",
     "experiment": {"id", "name", "owner", "status", "result", "error", "finished_at",
                    "sweep_id", "tags"},
     "summary": {"verdict": "vanishing" | "exploding" | "not_learning" | "healthy" | "no_data" | null},
     "links": {"experiment": URL, "summary": URL, "series": URL, "deliveries": URL}}

A sweep's (`"type": "sweep.ended"`) carries `sweep` (id, name, owner, size, status
counts, and each member's id, name, params, status and result) and its links. The body
is fixed once, when the end is announced, so every retry sends the same bytes.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from service import store
from service.analysis.diagnosis import diagnose
from service.config import Settings
from service.db.base import utcnow
from service.store.callbacks import CallbackRecord
from service.store.records import ExperimentRecord
from service.store.sweeps import get_sweep, sweep_members

log = logging.getLogger("gradwatch.callbacks")
API = "/api/v1"


def _verdict(session: Session, record: ExperimentRecord, settings: Settings) -> str | None:
    """The summary's verdict, or None when there is too little to judge (a run that
    failed before its first step)."""
    from service.api.routes.analysis import read_for_diagnosis  # the summary route's own reader

    try:
        return diagnose(read_for_diagnosis(session, record), settings.diagnosis, 200).verdict
    except Exception:  # noqa: BLE001 - an event without a verdict beats no event
        log.warning("no verdict for experiment %s's callback", record.id, exc_info=True)
        return None


def _experiment(record: ExperimentRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "owner": record.owner,
        "tags": record.tags,
        "status": record.status,
        "result": record.result,
        "error": record.error,
        "finished_at": None if record.finished_at is None else record.finished_at.isoformat(),
        "sweep_id": record.sweep_id,
        "sweep_params": record.sweep_params,
    }


def experiment_event(session: Session, callback: CallbackRecord, settings: Settings) -> dict[str, Any] | None:
    """The event, or None when the end status is not among the callback's `events`."""
    assert callback.experiment_id is not None
    record = store.get_experiment(session, callback.experiment_id)
    if record is None or record.status not in callback.events:
        return None
    base = f"{settings.resolved_api_url}{API}/experiments/{record.id}"
    return {
        "id": callback.id,
        "type": "experiment.ended",
        "created_at": utcnow().isoformat(),
        "experiment": _experiment(record),
        "summary": {"verdict": _verdict(session, record, settings)},
        "links": {
            "experiment": base,
            "summary": f"{base}/summary",
            "series": f"{base}/series?metric=grad_mean_abs",
            "deliveries": f"{base}/deliveries",
        },
    }


def sweep_event(session: Session, callback: CallbackRecord, settings: Settings) -> dict[str, Any] | None:
    """The event, or None when no member ended in one of the callback's `events`."""
    assert callback.sweep_id is not None
    sweep = get_sweep(session, callback.sweep_id)
    members = sweep_members(session, callback.sweep_id)
    if sweep is None or not any(member.status in callback.events for member in members):
        return None
    base = f"{settings.resolved_api_url}{API}/sweeps/{sweep.id}"
    return {
        "id": callback.id,
        "type": "sweep.ended",
        "created_at": utcnow().isoformat(),
        "sweep": {
            "id": sweep.id,
            "name": sweep.name,
            "owner": sweep.owner,
            "size": len(members),
            "status_counts": dict(Counter(member.status for member in members)),
            "members": [
                {"id": m.id, "name": m.name, "params": m.sweep_params, "status": m.status, "result": m.result}
                for m in members
            ],
        },
        "links": {"sweep": base, "compare": f"{base}/compare?metric=grad_mean_abs", "deliveries": f"{base}/deliveries"},
    }


def build_event(session: Session, callback: CallbackRecord, settings: Settings) -> dict[str, Any] | None:
    if callback.experiment_id is not None:
        return experiment_event(session, callback, settings)
    return sweep_event(session, callback, settings)
