"""NUL bytes, other control characters and integers outside 64 bits, in every string and
integer the API takes, are 422 on both stores — never a 500 (PostgreSQL cannot store NUL;
its BIGINT and SQLite's INTEGER stop at 2^63 − 1).

The places are found by walking the app's own OpenAPI document: every operation's path
and query parameters, and every string and integer field of the experiment spec (as a
POST /experiments body and as a sweep's base and grid) and of the sweep body. A new
parameter or spec field is covered without editing this test.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from httpx import Client

from tests.service.api.conftest import MLP

NUL = "bad\x00name"
ESC = "\x1b[2J\x1b[31mred"
HUGE = 2**64  # above every 64-bit integer
TINY = -(2**64)
SWEEP_GRID = {"training.seed": [0]}


def resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def kinds(schema: dict[str, Any], document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The non-null alternatives of a (possibly anyOf) schema, resolved."""
    schema = resolve(schema, document)
    for branch in schema.get("anyOf", [schema]):
        branch = resolve(branch, document)
        if branch.get("type") != "null":
            yield branch


def leaf_fields(schema: dict[str, Any], document: dict[str, Any], path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str, dict[str, Any]]]:
    """(path, 'string' | 'integer', schema) of every string and integer in a body schema;
    an array contributes its first item."""
    for branch in kinds(schema, document):
        kind = branch.get("type")
        if kind == "object" and "properties" in branch:
            for name, child in branch["properties"].items():
                yield from leaf_fields(child, document, (*path, name))
        elif kind == "array":
            yield from leaf_fields(branch.get("items", {}), document, (*path, 0))
        elif kind in ("string", "integer"):
            yield path, kind, branch


def with_value(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    node: Any = body
    for part, following in zip(path, path[1:], strict=False):
        if isinstance(part, int):
            while len(node) <= part:
                node.append({} if isinstance(following, str) else None)
            node = node[part]
        else:
            node = node.setdefault(part, [] if isinstance(following, int) else {})
    last = path[-1]
    if isinstance(last, int):
        node[:] = [value]
    else:
        node[last] = value
    return body


def hostile_values(kind: str, in_json: bool = True) -> list[Any]:
    """A lone surrogate travels only as a JSON escape: a URL cannot carry it."""
    if kind == "integer":
        return [HUGE, TINY]
    return [NUL, ESC, "\ud800"] if in_json else [NUL, ESC]


def post(client: Client, url: str, body: Any) -> Any:
    # json.dumps escapes every non-ASCII character, so a lone surrogate goes as `\ud800`.
    return client.post(url, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def assert_refused(response: Any, what: str, loc: list[Any] | None = None) -> None:
    assert response.status_code == 422, f"{what}: {response.status_code} {response.text[:300]}"
    body = response.json()
    assert set(body) == {"message", "detail", "error_id"}, what
    if loc is not None:  # refused at that field, not by something else in the request
        assert any(problem["loc"][: len(loc)] == loc for problem in body["detail"]), (what, body["detail"])


def test_every_parameter_of_every_operation_refuses_nul_and_huge_integers(client: Client) -> None:
    document = client.get("/openapi.json").json()
    experiment_id = client.post("/api/v1/experiments", json=MLP).json()["id"]
    sweep = client.post("/api/v1/sweeps", json={"base": MLP, "grid": SWEEP_GRID})
    sweep_id = sweep.json()["id"]
    run_id = client.post("/api/v1/reproductions/pascanu-2013/runs", json={}).json()["id"]
    ids = {"experiment_id": experiment_id, "sweep_id": sweep_id, "name": "pascanu-2013", "run_id": run_id}
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            for parameter in parameters:
                for branch in kinds(parameter["schema"], document):
                    kind = branch.get("type")
                    if kind == "array":
                        kind = resolve(branch["items"], document).get("type")
                    if kind not in ("string", "integer"):
                        continue
                    for value in hostile_values(kind, in_json=False):
                        url = path.format(**ids)
                        query = {p["name"]: "loss" for p in parameters if p["name"] == "metric" and p.get("required")}
                        if parameter["in"] == "path":
                            url = path.format(**(ids | {parameter["name"]: quote(str(value), safe="")}))
                            response = client.request(method, url, params=query)
                        elif parameter["in"] == "header":
                            # A header rides on a valid body, so that only the header is wrong.
                            body = MLP if path.endswith("/experiments") else {"base": MLP, "grid": SWEEP_GRID}
                            try:
                                response = client.request(method, url, json=body, headers={parameter["name"]: str(value)})
                            except ValueError:  # httpx refuses to send it: no HTTP request can carry it
                                continue
                        else:
                            response = client.request(method, url, params=query | {parameter["name"]: value})
                        assert_refused(response, f"{method} {path} {parameter['name']}={value!r}", [parameter["in"], parameter["name"]])
                        checked += 1
    assert checked >= 80, checked  # 22 operations, most with several parameters


def test_every_spec_field_refuses_nul_and_huge_integers(client: Client) -> None:
    document = client.get("/openapi.json").json()
    spec_schema = {"$ref": "#/components/schemas/ExperimentSpec"}
    fields = list(leaf_fields(spec_schema, document))
    assert {("name",), ("tags", 0), ("model", "hidden_sizes", 0), ("training", "steps"), ("training", "seed")} <= {
        path for path, _, _ in fields
    }
    for path, kind, _ in fields:
        for value in hostile_values(kind):
            what = f"{'.'.join(map(str, path))}={value!r}"
            assert_refused(post(client, "/api/v1/experiments", with_value(MLP, path, value)), what, ["body", *path])
            # The same field in a sweep's base (stored as sent) and as a grid value.
            base = with_value(MLP, path, value)
            assert_refused(post(client, "/api/v1/sweeps", {"base": base, "grid": SWEEP_GRID}), f"base {what}", ["body", "base"])
            grid = {".".join(str(p) for p in path if isinstance(p, str)): [value]}
            assert_refused(post(client, "/api/v1/sweeps", {"base": MLP, "grid": grid}), f"grid {what}", ["body"])
    assert client.get("/api/v1/experiments").json()["total"] == 0  # nothing was stored


def test_sweep_body_strings_and_grid_keys_refuse_control_characters(client: Client) -> None:
    document = client.get("/openapi.json").json()
    for path, kind, _ in leaf_fields({"$ref": "#/components/schemas/SweepCreate"}, document):
        for value in hostile_values(kind):
            body = with_value({"base": MLP, "grid": SWEEP_GRID}, path, value)
            assert_refused(post(client, "/api/v1/sweeps", body), f"{path}={value!r}", ["body", *path])
    for key in (NUL, "model.\x00activation", "training.\x1bseed"):
        assert_refused(client.post("/api/v1/sweeps", json={"base": MLP, "grid": {key: [0]}}), repr(key), ["body", "grid"])
    assert_refused(
        client.post("/api/v1/sweeps", json={"base": MLP | {"name\x00": 1}, "grid": SWEEP_GRID}), "base key", ["body", "base"]
    )
    assert client.get("/api/v1/experiments").json()["total"] == 0  # nothing was stored


def test_deeply_nested_sweep_documents_are_422(client: Client) -> None:
    for depth in (40, 300, 800):
        nested: Any = 0
        for _ in range(depth):
            nested = {"a": nested}
        # Under a value the grid overrides: the members are valid, the stored base is not.
        body = {"base": MLP | {"training": {"seed": nested}}, "grid": {"training.seed": [0]}}
        response = post(client, "/api/v1/sweeps", body)
        assert response.status_code == 422, (depth, response.status_code, response.text[:200])
        assert set(response.json()) == {"message", "detail", "error_id"}
