"""Token rows: found by hash only while not revoked; last use kept to the minute."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from service import store
from service.auth.tokens import Caller, Scope, hash_token, new_token
from service.db.base import utcnow


def test_find_touch_and_revoke(session: Session) -> None:
    token, digest = new_token()
    record = store.create_token(session, digest, owner="alice", scope="write", name="ci")
    assert store.find_active_token(session, hash_token(token)) == record
    assert store.find_active_token(session, hash_token(token + "x")) is None

    now = utcnow()
    assert store.touch_token(session, record, now) is True
    touched = store.find_active_token(session, digest)
    assert abs(touched.last_used_at - now) < timedelta(milliseconds=1)
    assert store.touch_token(session, touched, now + timedelta(seconds=30)) is False  # within the minute: no write
    assert store.touch_token(session, record, now + timedelta(seconds=30)) is False  # a stale copy: the UPDATE's own condition
    assert store.touch_token(session, touched, now + timedelta(seconds=61)) is True

    revoked = store.revoke_token(session, record.id)
    assert revoked.revoked_at is not None
    assert store.find_active_token(session, digest) is None
    assert store.revoke_token(session, record.id).revoked_at == revoked.revoked_at  # revoking again keeps the time
    assert store.revoke_token(session, "missing") is None
    assert [t.id for t in store.list_tokens(session)] == [record.id]
    assert store.list_tokens(session, owner="bob") == []


def test_tokens_are_random_and_scopes_rule_methods() -> None:
    tokens = {new_token()[0] for _ in range(1000)}
    assert len(tokens) == 1000 and all(len(t) == 46 for t in tokens)
    reader = Caller("alice", Scope.read, "t1")
    assert reader.may("GET") and reader.may("head") and not reader.may("POST") and not reader.may("DELETE")
    assert reader.sees == "alice"
    admin = Caller("root", Scope.admin, "t2")
    assert admin.may("DELETE") and admin.sees is None
