"""Deciding a reproduction: each check's measured value against its expectation, each
claim reproduced when all its checks pass, and nothing decided while members still run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.db.models import FINISHED_STATUSES
from service.reproductions.measures import MEASURES, MemberFacts
from service.reproductions.records import Check, Claim, Study


@dataclass(frozen=True)
class CheckOutcome:
    label: str
    measure: str
    member: dict[str, Any]
    experiment_id: str | None
    expected: str  # the tolerance, in words ("0.015 … 0.019")
    measured_here: Any  # what the catalogue's author measured on the reference machine
    measured: Any  # what this run measured; None while its member runs, or when absent
    passed: bool | None  # None: not decided yet


@dataclass(frozen=True)
class ClaimOutcome:
    sentence: str
    source: str
    paper_value: str
    checks: list[CheckOutcome]
    reproduced: bool | None  # None while a member it reads has not finished


def _matches(member: dict[str, Any], params: dict[str, Any]) -> bool:
    return all(params.get(path) == value for path, value in member.items())


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def decide_check(check: Check, members: Sequence[MemberFacts]) -> CheckOutcome:
    found = next((m for m in members if _matches(check.member, m.record.sweep_params or {})), None)
    finished = found is not None and found.record.status in FINISHED_STATUSES
    measured = _plain(MEASURES[check.measure][1](found)) if finished and found is not None else None
    if found is None:
        passed: bool | None = False  # the protocol's member is missing: nothing can be reproduced
    elif not finished:
        passed = None
    else:
        passed = check.expect.accepts(measured)
    return CheckOutcome(
        label=check.label,
        measure=check.measure,
        member=check.member,
        experiment_id=found.record.id if found is not None else None,
        expected=check.expect.describe(),
        measured_here=check.expect.measured_here,
        measured=measured,
        passed=passed,
    )


def decide_claim(claim: Claim, members: Sequence[MemberFacts]) -> ClaimOutcome:
    checks = [decide_check(check, members) for check in claim.checks]
    if any(c.passed is False for c in checks):
        reproduced: bool | None = False
    elif any(c.passed is None for c in checks):
        reproduced = None
    else:
        reproduced = True
    return ClaimOutcome(claim.sentence, claim.source, claim.paper_value, checks, reproduced)


def decide(study: Study, members: Sequence[MemberFacts]) -> list[ClaimOutcome]:
    return [decide_claim(claim, members) for claim in study.claims]
