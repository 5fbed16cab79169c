"""`GET /experiments?ids=a,b,c`: many experiments in one call, on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import Client

from service.api.main import create_app
from service.config import Settings
from tests.service.api.conftest import MLP, api_client, bearer

API = "/api/v1/experiments"


def test_ids_return_those_experiments_and_name_the_missing(app: FastAPI, client: Client) -> None:
    ids = [client.post(API, json=MLP | {"name": f"run-{i}"}).json()["id"] for i in range(4)]
    theirs = client.post(API, json=MLP, headers=bearer(app, "bob")).json()["id"]
    unknown = "0" * 32
    asked = [ids[0], ids[2], unknown, theirs, ids[3], ids[0]]
    page = client.get(API, params={"ids": ",".join(asked)}).json()
    assert [e["id"] for e in page["items"]] == [ids[3], ids[2], ids[0]]  # newest first, duplicates once
    assert page["total"] == 3 and page["limit"] == 5
    assert page["missing"] == [unknown, theirs]  # someone else's is as unknown as a made-up one
    cancelled = client.post(f"{API}/{ids[2]}/cancel").json()["id"]
    narrowed = client.get(API, params={"ids": f"{ids[0]},{ids[2]}", "status": "cancelled"}).json()
    assert [e["id"] for e in narrowed["items"]] == [cancelled] and narrowed["missing"] == []
    assert client.get(API).json()["missing"] == []


def test_too_many_or_no_ids_are_refused(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"limits": settings.limits.model_copy(update={"max_bulk_ids": 3})}))
    with api_client(app) as client:
        response = client.get(API, params={"ids": "a,b,c,d"})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "ids"]
        assert "above the limit 3" in response.json()["message"] and "MAX_BULK_IDS" in response.json()["message"]
        assert client.get(API, params={"ids": " , "}).status_code == 422
        assert client.get(API, params={"ids": "a,b,c"}).json()["missing"] == ["a", "b", "c"]
