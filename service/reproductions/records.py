"""What a study in the catalogue is made of (data only: no database, no HTTP)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Expectation:
    """What a check accepts: a number within [low, high], or a value equal to `equals`.

    `measured_here` is what gradwatch measured on its reference machine (2 CPU cores,
    torch 2.13.0, seed 0) when the entry was written; [low, high] is the tolerance around it.
    """

    measured_here: Any
    low: float | None = None
    high: float | None = None
    equals: Any = None
    not_equals: Any = None

    def accepts(self, value: Any) -> bool:
        if self.not_equals is not None:
            return value is not None and value != self.not_equals
        if self.low is None and self.high is None:
            return value == self.equals
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:  # NaN
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.not_equals is not None:
            return f"not {self.not_equals}"
        if self.low is None and self.high is None:
            return f"= {self.equals}"
        if self.low is None:
            return f"≤ {self.high:g}"
        if self.high is None:
            return f"≥ {self.low:g}"
        return f"{self.low:g} … {self.high:g}"


@dataclass(frozen=True)
class Check:
    """One number read from one member of the sweep, against its expectation."""

    member: dict[str, Any]  # grid path → value: picks the member whose params match
    measure: str  # a name in measures.MEASURES
    expect: Expectation
    label: str  # what is measured, in words ("lstm: memory horizon after training")


@dataclass(frozen=True)
class Claim:
    sentence: str
    source: str  # the paper's (or the essay's) figure or table this claim is read from
    paper_value: str  # what the source reports, in its own terms
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class Study:
    name: str  # URL-safe, e.g. "essay-lstm-memory"
    title: str
    reference: str  # the paper (authors, year, title) or the essay
    protocol: dict[str, Any]  # a sweep: {"base": ExperimentSpec JSON, "grid": {path: [values]}}
    claims: tuple[Claim, ...]
    minutes_here: float  # wall time of one run here (2 shared cores, loaded), through one worker
    in_ci: bool = False  # run end to end by the test suite (the rest by `make reproduce-all`)
    requires: tuple[str, ...] = field(default=())  # series the protocol needs the engine to record
