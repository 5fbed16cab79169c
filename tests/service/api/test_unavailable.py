"""The database unreachable → 503 with Retry-After and the one error shape, never a 500:
a PostgreSQL URL on a port nothing listens on, and a real database dropped under a
running app."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from httpx import Client

from service.api.main import create_app
from service.config import Settings
from service.db.migrate import upgrade
from tests.e2e.stack import free_port
from tests.service.api.conftest import MLP, api_client

API = "/api/v1"
SWEEP = {"base": {"model": {"type": "mlp"}, "dataset": {"name": "digits", "limit": 500}}, "grid": {"training.seed": [0, 1]}}


def assert_unavailable(response, retry_after_s: int) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(retry_after_s)
    body = response.json()
    assert set(body) == {"message", "detail", "error_id"} and body["detail"] == body["message"]
    assert body["message"].startswith("the database is unreachable") and f"retry in {retry_after_s} s" in body["message"]
    for where in ("127.0.0.1", "psycopg", "OperationalError", "Traceback", "gradwatch_test_"):
        assert where not in response.text, where


def test_a_database_nobody_listens_on_is_503_on_every_kind_of_route(tmp_path: Path) -> None:
    port = free_port()  # bound and released: nothing listens there now
    settings = Settings(
        home=tmp_path / "home",
        database_url=f"postgresql+psycopg://root@127.0.0.1:{port}/gradwatch",
        reaper_interval_s=0,
        db_unavailable_retry_after_s=7,
    )
    # No token can be made without a database: send one of the right form, which the
    # server can only check by asking the database.
    with api_client(create_app(settings), owner=None) as client:
        client.headers["Authorization"] = "Bearer gw_" + "x" * 43
        for method, path, body in [
            ("GET", "/experiments", None),
            ("GET", "/experiments/0123456789abcdef0123456789abcdef", None),
            ("GET", "/experiments/0123456789abcdef0123456789abcdef/series?metric=loss", None),
            ("POST", "/experiments", MLP),
            ("POST", "/experiments/0123456789abcdef0123456789abcdef/cancel", None),
            ("DELETE", "/experiments/0123456789abcdef0123456789abcdef", None),
            ("POST", "/sweeps", SWEEP),
            ("GET", "/sweeps/0123456789abcdef0123456789abcdef", None),
        ]:
            assert_unavailable(client.request(method, API + path, json=body), 7)
        assert client.get(f"{API}/health").json()["database"] == "unavailable"


def test_a_database_dropped_under_a_running_app_is_503(
    postgres_url: str, postgres_server_url: str, tmp_path: Path
) -> None:
    upgrade(postgres_url)
    settings = Settings(home=tmp_path / "home", database_url=postgres_url, reaper_interval_s=0)
    with api_client(create_app(settings)) as client:
        created = client.post(f"{API}/experiments", json=MLP)
        assert created.status_code == 201
        experiment_id = created.json()["id"]
        assert client.get(f"{API}/experiments/{experiment_id}").status_code == 200
        name = sa.make_url(postgres_url).database
        admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))  # kills the app's connections
        finally:
            admin.dispose()
        assert_unavailable(client.get(f"{API}/experiments/{experiment_id}"), settings.db_unavailable_retry_after_s)
        assert_unavailable(client.post(f"{API}/experiments", json=MLP), settings.db_unavailable_retry_after_s)


def test_retry_after_is_documented_on_every_operation(client: Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path == f"{API}/health":
                continue
            unavailable = operation["responses"]["503"]
            assert "Retry-After" in unavailable["headers"], (method, path)
            assert unavailable["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}


def test_what_counts_as_unreachable(postgres_url: str) -> None:
    """Real errors from a real PostgreSQL: a refused connection and an exhausted pool are
    "unreachable" (503); a bad statement (NUL in text, which the API now refuses before it
    gets here) is a bug (500)."""
    import sqlalchemy.exc as sa_exc

    from service.api.errors import database_unreachable
    from service.db.engine import make_engine

    refused = make_engine(f"postgresql+psycopg://root@127.0.0.1:{free_port()}/x")
    with pytest.raises(sa_exc.OperationalError) as caught:
        refused.connect()
    assert database_unreachable(caught.value)
    refused.dispose()

    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        with engine.connect() as held:
            with pytest.raises(sa_exc.TimeoutError) as exhausted:
                engine.connect()
            assert database_unreachable(exhausted.value)
            with pytest.raises(sa_exc.DataError) as bad:
                held.execute(sa.text("SELECT CAST(:text AS text)"), {"text": "a\x00b"})
            assert not database_unreachable(bad.value)
    finally:
        engine.dispose()
