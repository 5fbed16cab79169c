"""A reproduction run's report as JSON: per claim, what was expected, what was measured,
whether it reproduced, and the plots that show it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from service.db.models import FINISHED_STATUSES
from service.reproductions.measures import MEASURES, MemberFacts
from service.reproductions.records import Study
from service.reproductions.verdicts import decide
from service.store.reproductions import ReproductionRunRecord

API = "/api/v1"

# measure → (plot name, path under the member's experiment): what shows the number.
PLOTS: dict[str, tuple[tuple[str, str], ...]] = {
    "depth_ratio_at_start": (("grad_mean_abs", "plot.png?metric=grad_mean_abs"), ("profile", "profile.png")),
    "backprop_ratio_at_start": (("backprop_norm", "profile.png?metric=backprop_norm"),),
    "backprop_log_distortion": (("backprop_norm", "profile.png?metric=backprop_norm"),),
    "diverged_at_step": (("grad_norm_total", "plot.png?metric=grad_norm_total"), ("loss", "plot.png?metric=loss")),
    "post_clip_max": (("grad_norm_total_clipped", "plot.png?metric=grad_norm_total_clipped"),),
    "horizon": (("timesteps", "timesteps.png"),),
    "first_to_last": (("timesteps", "timesteps.png"),),
    "first_to_last_at_start": (("timesteps", "timesteps.png"),),
    "test_loss": (("loss", "plot.png?metric=loss"),),
    "test_over_baseline": (("loss", "plot.png?metric=loss"),),
    "baseline_test_loss": (("loss", "plot.png?metric=loss"),),
    "sharpness_start_over_limit": (("sharpness", "sharpness.png"),),
    "sharpness_peak_over_limit": (("sharpness", "sharpness.png"),),
    "sharpness_final_over_limit": (("sharpness", "sharpness.png"),),
    "edge_of_stability_found": (("sharpness", "sharpness.png"),),
}


def study_public(study: Study) -> dict[str, Any]:
    used = sorted({check.measure for claim in study.claims for check in claim.checks})
    return {
        "name": study.name,
        "title": study.title,
        "reference": study.reference,
        "protocol": study.protocol,
        "claims": [
            {
                "sentence": claim.sentence,
                "source": claim.source,
                "paper_value": claim.paper_value,
                "checks": [
                    {
                        "label": check.label,
                        "measure": check.measure,
                        "member": check.member,
                        "expected": check.expect.describe(),
                        "measured_here": check.expect.measured_here,
                    }
                    for check in claim.checks
                ],
            }
            for claim in study.claims
        ],
        "minutes_here": study.minutes_here,
        "in_ci": study.in_ci,
        "measures": {name: MEASURES[name][0] for name in used},
    }


def run_report(run: ReproductionRunRecord, study: Study, members: list[MemberFacts]) -> dict[str, Any]:
    claims = []
    for outcome in decide(study, members):
        checks = []
        for check in outcome.checks:
            plots = {"summary": f"{API}/experiments/{check.experiment_id}/summary"} if check.experiment_id else {}
            for name, path in PLOTS.get(check.measure, ()) if check.experiment_id else ():
                plots[name] = f"{API}/experiments/{check.experiment_id}/{path}"
            checks.append({**asdict(check), "plots": plots})
        claims.append({**asdict(outcome), "checks": checks})
    statuses = [m.record.status for m in members]
    finished = bool(statuses) and all(s in FINISHED_STATUSES for s in statuses)
    decided = [c["reproduced"] for c in claims]
    return {
        "id": run.id,
        "study": run.study,
        "owner": run.owner,
        "created_at": run.created_at,
        "sweep_id": run.sweep_id,
        "overrides": run.overrides,
        "variant": bool(run.overrides),
        "status": "finished" if finished else "running" if any(s != "queued" for s in statuses) else "queued",
        "reproduced": False if False in decided else None if None in decided else True,
        "claims": claims,
        "links": {
            "self": f"{API}/reproduction-runs/{run.id}",
            "study": f"{API}/reproductions/{run.study}",
            "sweep": f"{API}/sweeps/{run.sweep_id}",
            "compare": f"{API}/sweeps/{run.sweep_id}/compare.png?metric=grad_norm_total",
        },
    }
