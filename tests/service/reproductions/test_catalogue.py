"""Every study of the catalogue is runnable and checkable as written: its protocol expands
into valid members, each check reads a member the grid makes, and every measure exists."""

from __future__ import annotations

import pytest

from service.analysis.sweeps import expand_grid
from service.config import Limits
from service.reproductions.catalogue import STUDIES
from service.reproductions.measures import MEASURES
from service.reproductions.records import Expectation


@pytest.mark.parametrize("study", STUDIES, ids=lambda study: study.name)
def test_each_study_expands_and_each_check_finds_its_member(study) -> None:
    members = expand_grid(study.protocol["base"], study.protocol["grid"], Limits())
    params = [member.params for member in members]
    assert study.claims and study.reference and study.minutes_here <= 10
    for claim in study.claims:
        assert claim.sentence and claim.source and claim.paper_value and claim.checks
        for check in claim.checks:
            assert check.measure in MEASURES, check.measure
            matching = [p for p in params if all(p.get(k) == v for k, v in check.member.items())]
            assert len(matching) == 1, (check.label, check.member, params)
            # The value measured here passes its own check (where one was measured).
            if check.expect.measured_here is not None:
                assert check.expect.accepts(check.expect.measured_here), check.label


def test_names_are_unique_and_url_safe() -> None:
    names = [study.name for study in STUDIES]
    assert len(set(names)) == len(names)
    assert all(name.replace("-", "").isalnum() and name == name.lower() for name in names)


def test_expectations_accept_what_they_say() -> None:
    band = Expectation(measured_here=0.0167, low=0.015, high=0.019)
    assert band.accepts(0.0167) and not band.accepts(0.02) and not band.accepts(None)
    assert not band.accepts(float("nan")) and band.describe() == "0.015 … 0.019"
    assert Expectation(measured_here=5e-13, high=1e-6).accepts(5e-13)
    assert not Expectation(measured_here=5e-13, high=1e-6).accepts(True)  # a bool is not a number
    assert Expectation(measured_here="vanishing", equals="vanishing").accepts("vanishing")
    assert not Expectation(measured_here="healthy", not_equals="exploding").accepts("exploding")
    assert not Expectation(measured_here="healthy", not_equals="exploding").accepts(None)
