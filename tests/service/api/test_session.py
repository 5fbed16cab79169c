"""The dashboard's login (POST /api/v1/session): a bearer token in, an HttpOnly
SameSite=Strict cookie out holding a session token of its own; with that cookie every
state-changing request needs the CSRF value and this server's Origin; logging out revokes
the session; with authentication off, a browser's cross-origin change is refused too."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.orm import Session

from service import store
from service.api.main import create_app
from service.config import Settings
from tests.service.api.conftest import MLP, TEST_OWNER, api_client, make_token


def queued(session: Session) -> str:
    return store.create_experiment(session, name="q", tags=[], spec=MLP, queue="cpu", owner=TEST_OWNER).id


def test_login_sets_a_strict_httponly_cookie_and_changes_need_the_csrf_value(app: FastAPI, api_session: Session) -> None:
    token = make_token(app)
    with api_client(app, owner=None) as browser:
        login = browser.post("/api/v1/session", headers={"Authorization": f"Bearer {token}"})
        assert login.status_code == 201, login.text
        cookie = login.headers["set-cookie"]
        assert "gw_session=gw_" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert token not in cookie  # a session token of its own, not the pasted one
        csrf = login.json()["csrf_token"]
        assert browser.get("/api/v1/session").json() == {"auth": "required", "owner": TEST_OWNER, "scope": "write", "csrf_token": csrf}

        experiment_id = queued(api_session)
        cancel = f"/api/v1/experiments/{experiment_id}/cancel"
        assert browser.get(f"/api/v1/experiments/{experiment_id}").status_code == 200  # reads need no CSRF value
        refused = browser.post(cancel)
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["message"]
        assert browser.post(cancel, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
        foreign = browser.post(cancel, headers={"X-CSRF-Token": csrf, "Origin": "http://127.0.0.1:9"})
        assert foreign.status_code == 403 and "cross-origin" in foreign.json()["message"]
        assert store.get_experiment(api_session, experiment_id).cancel_requested is False
        done = browser.post(cancel, headers={"X-CSRF-Token": csrf, "Origin": "http://testserver"})
        assert done.status_code == 200 and done.json()["status"] == "cancelled"

        assert browser.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert browser.get("/api/v1/session").status_code == 401  # the cookie is cleared
    sessions = [t for t in store.list_tokens(api_session, owner=TEST_OWNER) if t.name == "dashboard session"]
    assert len(sessions) == 1 and sessions[0].revoked_at is not None


def test_pages_redirect_to_login_without_a_session(app: FastAPI) -> None:
    with api_client(app, owner=None) as browser:
        page = browser.get("/experiments/abc?metric=loss", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/experiments/abc?metric=loss"
        assert browser.get("/login?next=//evil.example/").text.count('data-next="/"') == 1  # no open redirect
        token = make_token(app)
        browser.post("/api/v1/session", headers={"Authorization": f"Bearer {token}"})
        assert browser.get("/", follow_redirects=False).status_code == 200


def test_with_auth_off_a_cross_origin_browser_change_is_refused(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"auth": "off"}))
    with app.state.session_factory() as session:
        experiment_id = queued(session)
    with api_client(app, owner=None) as browser:  # its lifespan disposes of the engine
        cancel = f"/api/v1/experiments/{experiment_id}/cancel"
        assert browser.post(cancel, headers={"Origin": "http://evil.example"}).status_code == 403
        assert browser.post(cancel, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert browser.get("/api/v1/session").json()["auth"] == "off"
        assert browser.post(cancel, headers={"Origin": "http://testserver"}).status_code == 200
