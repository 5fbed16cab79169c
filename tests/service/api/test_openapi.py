"""The published OpenAPI document and the server agree: every limit the server enforces is
a bound in the schema, taken from the serving app's own Settings, and every error the
API sends is documented with the one error shape."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import Client

from service.api.main import create_app
from service.config import Limits, Settings
from service.schemas.limits import LIMIT_EXTENSION
from tests.service.api.conftest import MLP, api_client

# Every value different from the default, so a bound copied from the defaults shows.
ODD_LIMITS = Limits(
    max_steps=777, max_depth=5, max_width=99, max_seq_len=123, max_batch_size=55, max_dataset_limit=4321,
    max_tags=3, max_name_length=40, max_sweep_size=6, max_points=2222,
)  # fmt: skip


def marked(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(where, schema) of every schema that carries a limit mark."""
    found = []
    if isinstance(node, dict):
        if LIMIT_EXTENSION in node:
            found.append((path, node))
        for key, value in node.items():
            found.extend(marked(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(marked(value, f"{path}/{index}"))
    return found


@pytest.fixture
def odd_app_client(settings: Settings) -> Client:
    with api_client(create_app(settings.model_copy(update={"limits": ODD_LIMITS}))) as client:
        yield client


# Budgets on a whole spec are estimates (service/budgets/), answered 422 with the estimate.
NOT_SCHEMA_BOUNDS = {
    "max_request_bytes",
    "max_active_per_owner",
    "max_parameters",
    "max_run_memory_bytes",
    "max_points_per_experiment",
    "max_points_per_sweep",
    "max_bulk_ids",  # a count of comma-separated ids in one string, stated in its description
}


def test_every_limit_in_the_schema_is_the_apps_setting(odd_app_client: Client) -> None:
    document = odd_app_client.get("/openapi.json").json()
    marks = marked(document)
    used = set()
    for where, schema in marks:
        for keyword, limit_name in schema[LIMIT_EXTENSION].items():
            assert schema[keyword] == getattr(ODD_LIMITS, limit_name), where
            used.add(limit_name)
    # Every request limit is published but those no JSON Schema can state: the body size
    # (a 413) and the owner's active runs (a 429 that depends on what is queued).
    assert used == set(Limits.model_fields) - NOT_SCHEMA_BOUNDS, used
    components = document["components"]["schemas"]
    assert components["ModelSpec"]["properties"]["hidden_sizes"]["items"]["maximum"] == 99
    assert components["ModelSpec"]["properties"]["hidden_sizes"]["maxItems"] == 5
    assert components["SweepCreate"]["properties"]["grid"]["additionalProperties"]["maxItems"] == 6
    max_points = [
        parameter["schema"]["anyOf"][0]["maximum"]
        for operations in document["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "max_points"
    ]
    assert max_points == [2222] * 11, max_points


@pytest.mark.parametrize(
    ("path", "limit_name"),
    [(("training", "steps"), "max_steps"), (("model", "hidden_sizes", 0), "max_width"), (("dataset", "limit"), "max_dataset_limit")],
)
def test_the_server_accepts_the_bound_and_refuses_one_above(odd_app_client: Client, path: tuple[Any, ...], limit_name: str) -> None:
    from tests.service.api.test_hostile_input import with_value

    limit = getattr(ODD_LIMITS, limit_name)
    base = MLP | {"dataset": {"name": "digits", "limit": 100}, "training": {"steps": 10, "batch_size": 10}}
    at = odd_app_client.post("/api/v1/experiments", json=with_value(base, path, limit))
    assert at.status_code == 201, at.text
    above = odd_app_client.post("/api/v1/experiments", json=with_value(base, path, limit + 1))
    assert above.status_code == 422 and f"above the limit {limit}" in above.json()["message"]


def test_max_points_bound_is_the_servers(odd_app_client: Client) -> None:
    experiment_id = odd_app_client.post("/api/v1/experiments", json=MLP).json()["id"]
    url = f"/api/v1/experiments/{experiment_id}/series"
    assert odd_app_client.get(url, params={"metric": "loss", "max_points": 2222}).status_code == 200
    above = odd_app_client.get(url, params={"metric": "loss", "max_points": 2223})
    assert above.status_code == 422 and "above the limit 2222" in above.json()["message"]


def test_errors_are_documented_with_the_one_shape(client: Client) -> None:
    document = client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    assert set(components["ErrorResponse"]["properties"]) == {"message", "detail", "error_id"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400 or path == "/api/v1/health":
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= set(operation["responses"]), (method, path)


def test_every_error_body_has_the_one_shape(client: Client) -> None:
    experiment_id = client.post("/api/v1/experiments", json=MLP).json()["id"]
    responses = {
        "400 not JSON": client.post("/api/v1/experiments", content=b"{", headers={"content-type": "application/json"}),
        "404 experiment": client.get("/api/v1/experiments/nope"),
        "404 sweep": client.get("/api/v1/sweeps/nope"),
        "404 metric": client.get(f"/api/v1/experiments/{experiment_id}/series", params={"metric": "grad_bogus"}),
        "404 route": client.get("/api/v1/nothing-here"),
        "405 method": client.put("/api/v1/experiments"),
        "413 too large": client.post("/api/v1/experiments", json=MLP | {"name": "x" * 1_100_000}),
        "422 spec": client.post("/api/v1/experiments", json=MLP | {"training": {"steps": 0}}),
        "422 query": client.get("/api/v1/experiments", params={"limit": 0}),
    }
    for what, response in responses.items():
        assert response.status_code == int(what[:3]), what
        body = response.json()
        assert set(body) == {"message", "detail", "error_id"}, what
        assert isinstance(body["message"], str) and body["message"] and body["error_id"] is None, what
        if response.status_code == 422:
            assert body["detail"] and all(set(problem) == {"loc", "msg", "type"} for problem in body["detail"]), what
        else:
            assert body["detail"] == body["message"], what
