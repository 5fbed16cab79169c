"""Idempotency keys: which resource a key created, and the arbiter between two requests
that send one key at once.

The arbiter is the primary key `(owner, key)`, not a lock in a process: `claim_key`
inserts the key in the same transaction that inserts the experiment or sweep, so of two
racing requests (in one API process or in several) exactly one commits both; the other's
INSERT fails, its transaction is rolled back whole, and it raises `KeyTaken`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import IdempotencyKey


@dataclass(frozen=True)
class KeyClaim:
    """A key to store with what a create makes."""

    owner: str
    key: str
    kind: str  # experiment | sweep
    request_hash: str
    ttl_s: float


@dataclass(frozen=True)
class StoredKey:
    owner: str
    key: str
    kind: str
    request_hash: str
    resource_id: str
    created_at: datetime
    expires_at: datetime


class KeyTaken(Exception):
    """Another request stored this key first; nothing of this one was stored."""

    def __init__(self, claim: KeyClaim) -> None:
        super().__init__(f"idempotency key {claim.key!r} of {claim.owner!r} was stored by another request")
        self.claim = claim


def find_key(session: Session, owner: str, key: str) -> StoredKey | None:
    """The unexpired key, or None (also once it has expired)."""
    row = session.execute(
        sa.select(IdempotencyKey)
        .where(IdempotencyKey.owner == owner, IdempotencyKey.key == key, IdempotencyKey.expires_at > utcnow())
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    session.commit()  # end the read transaction: a retry after KeyTaken must see the winner
    if row is None:
        return None
    return StoredKey(
        row.owner, row.key, row.kind, row.request_hash, row.resource_id, row.created_at, row.expires_at
    )


def claim_key(session: Session, claim: KeyClaim, resource_id: str) -> None:
    """Inside the creating transaction: store `claim` for `resource_id`, replacing the key
    if it has expired. Raises KeyTaken (after rolling the whole transaction back) when an
    unexpired key is already stored."""
    now = utcnow()
    session.execute(
        sa.delete(IdempotencyKey).where(
            IdempotencyKey.owner == claim.owner, IdempotencyKey.key == claim.key, IdempotencyKey.expires_at <= now
        )
    )
    session.add(
        IdempotencyKey(
            owner=claim.owner,
            key=claim.key,
            kind=claim.kind,
            request_hash=claim.request_hash,
            resource_id=resource_id,
            created_at=now,
            expires_at=now + timedelta(seconds=claim.ttl_s),
        )
    )
    try:
        session.flush()  # first, so a loser fails before inserting anything else
    except IntegrityError:
        session.rollback()
        raise KeyTaken(claim) from None


def commit_claimed(session: Session, claim: KeyClaim | None) -> None:
    """Commit a transaction that claimed a key; KeyTaken if the key's row lost a race at
    commit time (where a database reports the conflict only then)."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if claim is None:
            raise
        raise KeyTaken(claim) from None


def forget_key(session: Session, owner: str, key: str) -> None:
    """Drop a key whose request failed after its commit (the broker refused the task), so
    that the caller's retry with the same key creates anew instead of replaying a failure."""
    session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.owner == owner, IdempotencyKey.key == key))
    session.commit()


def purge_expired_keys(session: Session) -> int:
    deleted = session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow()))
    session.commit()
    return deleted.rowcount
