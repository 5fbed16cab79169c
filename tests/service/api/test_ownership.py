"""Owners: alice, bob and an admin. Nobody sees, reads, plots, exports, cancels or deletes
another owner's experiments or sweeps (404, as if they did not exist); an admin sees
everyone's and filters by `?owner=`; the same through GradwatchClient; and the per-owner
limit on queued + running experiments answers 429 with the numbers."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from service.api.main import create_app
from service.client import GradwatchClient, GradwatchError
from service.config import Limits, Settings
from tests.service.analysis.synthetic import mlp_run, recurrent_run, store_run
from tests.service.api.conftest import MLP, bearer

API = "/api/v1"
TINY = {**MLP, "dataset": {"name": "digits"}, "training": {"steps": 10}}
SWEEP = {"base": TINY, "grid": {"training.seed": [0, 1]}}


def _query(operation: dict) -> dict[str, str]:
    """Values for the operation's required query parameters."""
    required = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")]
    return {name: "loss" for name in required}  # the only required one is `metric`


@pytest.fixture
def people(app: FastAPI) -> dict[str, dict[str, str]]:
    return {"alice": bearer(app, "alice"), "bob": bearer(app, "bob"), "admin": bearer(app, "root", "admin")}


def test_nobody_reaches_another_owners_rows(
    app: FastAPI, client: httpx.Client, api_session: Session, people: dict[str, dict[str, str]]
) -> None:
    alice, bob, admin = people["alice"], people["bob"], people["admin"]
    mlp = store_run(api_session, mlp_run("sigmoid"), owner="alice")
    rnn = store_run(api_session, recurrent_run("rnn"), owner="alice")
    queued = client.post(f"{API}/experiments", json=TINY, headers=alice).json()
    sweep = client.post(f"{API}/sweeps", json=SWEEP, headers=alice).json()
    assert queued["owner"] == "alice" and sweep["owner"] == "alice"
    assert {m["id"] for m in sweep["members"]} <= {e["id"] for e in client.get(f"{API}/experiments", headers=alice).json()["items"]}
    bobs = client.post(f"{API}/experiments", json=TINY, headers=bob).json()

    walked = 0
    for path, methods in app.openapi()["paths"].items():
        for method, operation in methods.items():
            if "{experiment_id}" in path:
                ids, message = (mlp, rnn, queued["id"]), "no experiment with id {!r}"
            elif "{sweep_id}" in path:
                ids, message = (sweep["id"],), "no sweep with id {!r}"
            else:
                continue
            for target in ids:
                concrete = re.sub(r"\{[^}]+\}", target, path)
                response = client.request(method.upper(), concrete, params=_query(operation), headers=bob)
                assert response.status_code == 404, (method, concrete, response.text)
                assert response.json()["detail"] == message.format(target)  # not "exists, but…"
                walked += 1
                if method == "get":  # the owner does reach it (some routes 404 on an MLP, for that)
                    reached = client.get(concrete, params=_query(operation), headers=alice)
                    assert message.format(target) not in reached.text, (concrete, reached.text)
    assert walked >= 3 * 15  # every experiment route (reads, plots, exports, cancel, delete) and the sweep's

    assert client.get(f"{API}/experiments/{mlp}/series", params={"metric": "loss"}, headers=admin).status_code == 200
    assert client.get(f"{API}/sweeps/{sweep['id']}", headers=admin).json()["owner"] == "alice"

    # Nothing of alice's changed: bob's cancel and delete found nothing.
    for experiment_id in (mlp, rnn, queued["id"]):
        kept = client.get(f"{API}/experiments/{experiment_id}", headers=alice).json()
        assert kept["owner"] == "alice" and kept["cancel_requested"] is False
    assert client.get(f"{API}/experiments/{queued['id']}", headers=alice).json()["status"] == "queued"
    assert client.get(f"{API}/sweeps/{sweep['id']}", headers=alice).json()["size"] == 2

    # Lists: each owner their own; bob asking for alice's gets nothing; the admin everyone's.
    def listed(headers: dict[str, str], **params: str) -> set[str]:
        return {e["id"] for e in client.get(f"{API}/experiments", params={"limit": 500, **params}, headers=headers).json()["items"]}

    alices = {mlp, rnn, queued["id"], *(m["id"] for m in sweep["members"])}
    assert listed(alice) == alices
    assert listed(bob) == {bobs["id"]}
    assert listed(bob, owner="alice") == set()
    assert listed(admin) == alices | {bobs["id"]}
    assert listed(admin, owner="alice") == alices
    assert listed(admin, owner="bob") == {bobs["id"]}

    # An admin changes anyone's.
    assert client.post(f"{API}/experiments/{bobs['id']}/cancel", headers=admin).json()["status"] == "cancelled"
    assert client.delete(f"{API}/experiments/{bobs['id']}", headers=admin).status_code == 204
    assert client.get(f"{API}/experiments/{bobs['id']}", headers=bob).status_code == 404


def test_the_same_through_the_client(app: FastAPI, client: httpx.Client, people: dict[str, dict[str, str]]) -> None:
    def as_(headers: dict[str, str]) -> GradwatchClient:
        token = headers["Authorization"].removeprefix("Bearer ")
        return GradwatchClient("http://testserver", transport=client._transport, token=token)

    with as_(people["alice"]) as alice, as_(people["bob"]) as bob, as_(people["admin"]) as admin:
        mine = alice.submit(TINY)
        sweep = alice.submit_sweep(SWEEP["base"], SWEEP["grid"])
        for call in (
            lambda: bob.get(mine["id"]),
            lambda: bob.series(mine["id"], "loss"),
            lambda: bob.cancel(mine["id"]),
            lambda: bob.delete(mine["id"]),
            lambda: bob.sweep(sweep["id"]),
            lambda: bob.compare(sweep["id"], "loss"),
        ):
            with pytest.raises(GradwatchError) as hidden:
                call()
            assert hidden.value.status_code == 404
        assert bob.list()["total"] == 0
        assert alice.get(mine["id"])["status"] == "queued"
        assert admin.get(mine["id"])["owner"] == "alice"
        assert admin.list(owner="alice")["total"] == 3
        with as_(bearer(app, "alice", "read")) as reader, pytest.raises(GradwatchError) as forbidden:
            reader.submit(TINY)
        assert forbidden.value.status_code == 403


def test_an_owner_at_the_active_limit_gets_429(settings: Settings) -> None:
    from tests.service.api.conftest import api_client

    app = create_app(settings.model_copy(update={"limits": Limits(max_active_per_owner=3)}))
    with api_client(app, owner="alice") as alice:
        bob = bearer(app, "bob")
        first, second = (alice.post(f"{API}/experiments", json=TINY).json() for _ in range(2))
        too_big = alice.post(f"{API}/sweeps", json=SWEEP)  # 2 members: 2 + 2 > 3
        assert too_big.status_code == 429, too_big.text
        assert too_big.json()["detail"].startswith(
            "owner 'alice' has 2 experiments queued or running; 2 more would make 4, above the limit of 3"
        )
        assert "GRADWATCH_LIMIT_MAX_ACTIVE_PER_OWNER" in too_big.json()["detail"]
        assert alice.post(f"{API}/experiments", json=TINY).status_code == 201  # 3 of 3
        over = alice.post(f"{API}/experiments", json=TINY)
        assert over.status_code == 429 and "3 experiments queued or running; 1 more would make 4" in over.json()["detail"]
        assert alice.get(f"{API}/experiments").json()["total"] == 3  # the refused ones were not stored
        assert alice.post(f"{API}/experiments", json=TINY, headers=bob).status_code == 201  # bob has his own
        assert alice.post(f"{API}/experiments/{first['id']}/cancel").json()["status"] == "cancelled"
        assert alice.post(f"{API}/experiments", json=TINY).status_code == 201  # finished ones do not count
        assert second["status"] == "queued"
