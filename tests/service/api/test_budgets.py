"""Whole-spec budgets through the API, on SQLite and PostgreSQL: the issue's specs are
refused with 422 naming the estimate, the limit and its setting, before anything is
stored; a spec exactly at each budget is accepted and one unit over it is not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.budgets import estimate_points, estimate_spec_memory, parameter_count, run_shape
from service.config import Settings
from service.schemas.spec import ExperimentSpec

PATH = "/api/v1/experiments"

WHY = {
    "mlp 64 × 4096 with adam": (
        {"model": {"type": "mlp", "hidden_sizes": [4096] * 64}, "dataset": {"name": "mnist"}, "training": {"optimizer": "adam"}},
        ["max_parameters", "max_run_memory_bytes"],
    ),
    "lstm 8 × 2048 on adding, T 5000, batch 1024": (
        {
            "model": {"type": "lstm", "hidden_size": 2048, "num_layers": 8},
            "dataset": {"name": "adding", "seq_len": 5000},
            "training": {"batch_size": 1024},
        },
        ["max_run_memory_bytes"],
    ),
    "rnn with limit 100,000 × seq_len 10,000": (
        {"model": {"type": "rnn"}, "dataset": {"name": "adding", "limit": 100_000, "seq_len": 10_000}},
        ["max_run_memory_bytes"],
    ),
    "mlp 8 × 4096 for 1e6 steps": (
        {"model": {"type": "mlp", "hidden_sizes": [4096] * 8}, "dataset": {"name": "mnist"}, "training": {"steps": 1_000_000}},
        ["max_points_per_experiment"],
    ),
    "mlp 64 × 1 on digits for 1e6 steps": (
        {"model": {"type": "mlp", "hidden_sizes": [1] * 64}, "dataset": {"name": "digits"}, "training": {"steps": 1_000_000}},
        ["max_points_per_experiment"],
    ),
}

# Each of the above brought just under the default budgets by one knob.
JUST_UNDER = {
    "mlp 8 × 4096 for 600,000 steps (99M points)": {
        "model": {"type": "mlp", "hidden_sizes": [4096] * 8},
        "dataset": {"name": "mnist"},
        "training": {"steps": 600_000},
    },
    "mlp 64 × 1 on digits for 85,000 steps (99.7M points)": {
        "model": {"type": "mlp", "hidden_sizes": [1] * 64},
        "dataset": {"name": "digits"},
        "training": {"steps": 85_000},
    },
    "rnn with limit 100,000 × seq_len 1,000": {"model": {"type": "rnn"}, "dataset": {"name": "adding", "limit": 100_000, "seq_len": 1_000}},
    "mlp 10 × 4096 with adam": {"model": {"type": "mlp", "hidden_sizes": [4096] * 10}, "dataset": {"name": "mnist"}, "training": {"optimizer": "adam"}},
}

SMALL = {
    "model": {"type": "lstm", "hidden_size": 32, "num_layers": 2},
    "dataset": {"name": "adding", "seq_len": 40, "limit": 500},
    "training": {"steps": 300},
}


def _stored(spec: dict[str, Any]) -> dict[str, Any]:
    return ExperimentSpec.model_validate(spec).model_dump(mode="json")


def _total(client: httpx.Client) -> int:
    return client.get(PATH).json()["total"]


@pytest.mark.parametrize("name", list(WHY))
def test_the_issues_specs_are_refused_with_an_estimate(client: httpx.Client, name: str) -> None:
    spec, limits = WHY[name]
    response = client.post(PATH, json=spec)
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["type"] == "budget_exceeded"
    assert "estimated" in problem["msg"]
    for limit in limits:
        assert f"({limit}; the server's GRADWATCH_LIMIT_{limit.upper()} raises it)" in problem["msg"]
    assert _total(client) == 0  # nothing stored, nothing queued


@pytest.mark.parametrize("name", list(JUST_UNDER))
def test_the_same_specs_just_under_the_budgets_are_accepted(client: httpx.Client, name: str) -> None:
    response = client.post(PATH, json=JUST_UNDER[name])
    assert response.status_code == 201, response.text


def _at_and_over(client: httpx.Client, settings: Settings, limit_name: str, estimate: int) -> dict[str, Any]:
    setattr(settings.limits, limit_name, estimate)
    accepted = client.post(PATH, json=SMALL)
    assert accepted.status_code == 201, accepted.text
    setattr(settings.limits, limit_name, estimate - 1)
    refused = client.post(PATH, json=SMALL)
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["detail"]
    assert f"GRADWATCH_LIMIT_{limit_name.upper()}" in problem["msg"]
    return problem


def test_a_spec_at_the_parameter_budget_is_accepted_and_one_over_refused(client: httpx.Client, settings: Settings) -> None:
    count = parameter_count(run_shape(_stored(SMALL)))
    assert count == 4 * 32 * (2 + 32 + 2) + 4 * 32 * (32 + 32 + 2) + 33
    problem = _at_and_over(client, settings, "max_parameters", count)
    assert f"the network has {count:,} parameters, above the limit {count - 1:,}" in problem["msg"]


def test_a_spec_at_the_memory_budget_is_accepted_and_one_byte_over_refused(client: httpx.Client, settings: Settings) -> None:
    estimate = estimate_spec_memory(_stored(SMALL)).total
    problem = _at_and_over(client, settings, "max_run_memory_bytes", estimate)
    assert f"({estimate:,} bytes) of memory" in problem["msg"]
    assert "activations kept for backward" in problem["msg"]


def test_a_spec_at_the_points_budget_is_accepted_and_one_over_refused(client: httpx.Client, settings: Settings) -> None:
    points = estimate_points(run_shape(_stored(SMALL)))
    assert points.recorded_steps == 300 and points.timestep_rows == 30
    problem = _at_and_over(client, settings, "max_points_per_experiment", points.total)
    assert f"an estimated {points.total:,} points" in problem["msg"]


def test_max_runtime_s_defaults_to_the_cap_and_may_not_exceed_it(client: httpx.Client, settings: Settings) -> None:
    cap = settings.limits.max_runtime_s
    assert cap == 7 * 24 * 3600
    default = client.post(PATH, json=SMALL)
    assert default.status_code == 201 and default.json()["spec"]["training"]["max_runtime_s"] == cap
    at_cap = client.post(PATH, json=SMALL | {"training": {"max_runtime_s": cap}})
    assert at_cap.status_code == 201, at_cap.text
    over = client.post(PATH, json=SMALL | {"training": {"max_runtime_s": cap + 1}})
    assert over.status_code == 422
    [problem] = over.json()["detail"]
    assert problem["loc"] == ["body", "training", "max_runtime_s"] and problem["type"] == "limit_exceeded"
    assert "GRADWATCH_LIMIT_MAX_RUNTIME_S" in problem["msg"]


def _sweep(base: dict[str, Any], seeds: int) -> dict[str, Any]:
    return {"base": base, "grid": {"training.seed": list(range(seeds))}}


def test_the_issues_256_member_sweep_is_refused(client: httpx.Client) -> None:
    base = WHY["mlp 64 × 1 on digits for 1e6 steps"][0]
    response = client.post("/api/v1/sweeps", json=_sweep(base, 256))
    assert response.status_code == 422
    assert "max_points_per_experiment" in response.json()["message"]
    # Members that fit one by one but not together: the sweep's own budget.
    fitting = base | {"training": {"steps": 50_000}}
    response = client.post("/api/v1/sweeps", json=_sweep(fitting, 256))
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    member = estimate_points(run_shape(_stored(fitting))).total
    assert problem["loc"] == ["body", "grid"] and problem["type"] == "budget_exceeded"
    assert f"the sweep's 256 members would store an estimated {256 * member:,} points" in problem["msg"]
    assert "GRADWATCH_LIMIT_MAX_POINTS_PER_SWEEP" in problem["msg"]
    assert _total(client) == 0


def test_a_sweep_at_its_points_budget_is_accepted_and_one_over_refused(client: httpx.Client, settings: Settings) -> None:
    total = 3 * estimate_points(run_shape(_stored(SMALL))).total
    settings.limits.max_points_per_sweep = total - 1
    assert client.post("/api/v1/sweeps", json=_sweep(SMALL, 3)).status_code == 422
    settings.limits.max_points_per_sweep = total
    response = client.post("/api/v1/sweeps", json=_sweep(SMALL, 3))
    assert response.status_code == 201, response.text
    assert response.json()["size"] == 3
