"""Idempotent creation: `Idempotency-Key` on `POST /experiments` and `POST /sweeps`.

A pipeline that timed out waiting for an answer cannot know whether its request was
carried out; with a key of its own on the request it simply sends it again:

- first request with a key: creates as usual (201) and stores the key with a hash of
  the canonical request body and the id it created (`service/store/idempotency.py`);
- the same key and body again, within GRADWATCH_IDEMPOTENCY_TTL_S: 200 with the same
  resource and `Idempotent-Replayed: true`; nothing is created or enqueued;
- the same key with another body, or on the other route: 422 saying so;
- after the TTL the key is forgotten and creates anew.

Keys are scoped to the token's owner: two owners may use the same key. The canonical
body is the validated request with every default filled in, as sorted compact JSON, so
two bodies that ask for the same experiment are the same request.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, TypeVar

from fastapi import Header, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from service.config import Settings
from service.store.idempotency import KeyClaim, StoredKey, find_key

KEY_MAX_LENGTH = 255  # the idempotency_keys.key column
# Printable ASCII without spaces: a UUID, a ULID, a task-run id like `etl/2026-12-01/3`.
KEY_PATTERN = r"^[\x21-\x7e]+$"
REPLAYED_HEADER = "Idempotent-Replayed"
HEADER = "Idempotency-Key"
T = TypeVar("T")

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=KEY_MAX_LENGTH,
        pattern=KEY_PATTERN,
        description="Makes the request safe to retry: the same key with the same body within "
        "GRADWATCH_IDEMPOTENCY_TTL_S returns what the first request created (200, "
        "`Idempotent-Replayed: true`) instead of creating another; with another body, 422. "
        f"1 to {KEY_MAX_LENGTH} printable ASCII characters without spaces (a UUID is ideal), "
        "scoped to the token's owner.",
    ),
]

REPLAY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A replay: the key was used before with this body; the resource it created, "
        "unchanged, with the header `Idempotent-Replayed: true`.",
        "headers": {REPLAYED_HEADER: {"description": "`true` on a replay.", "schema": {"type": "string"}}},
    },
}


def request_hash(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _refuse(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("header", HEADER), "msg": message, "type": "idempotency_key_reused"}])


def _matching(stored: StoredKey, kind: str, digest: str) -> str:
    if stored.kind != kind:
        raise _refuse(
            f"key {stored.key!r} was used to create a {stored.kind} ({stored.resource_id}) until "
            f"{stored.expires_at.isoformat()}; use a new key for each request"
        )
    if stored.request_hash != digest:
        raise _refuse(
            f"key {stored.key!r} was used with a different request body, which created {kind} "
            f"{stored.resource_id}; send that request's exact body to get it back, or a new key "
            "for a new request"
        )
    return stored.resource_id


def begin(
    session: Session, settings: Settings, owner: str, key: str | None, kind: str, payload: Any
) -> tuple[KeyClaim | None, str | None]:
    """(the claim to store with the create, None) for a new key; (None, the id to replay)
    for a key seen before with this body; (None, None) without a key. 422 for a key seen
    with another body or route."""
    if key is None:
        return None, None
    digest = request_hash(payload)
    stored = find_key(session, owner, key)
    if stored is not None:
        return None, _matching(stored, kind, digest)
    return KeyClaim(owner, key, kind, digest, settings.idempotency_ttl_s), None


def winner(session: Session, claim: KeyClaim) -> str:
    """After KeyTaken: the id the concurrent request that stored the key created (422 if
    its body was another)."""
    stored = find_key(session, claim.owner, claim.key)
    if stored is None:  # it expired (or was forgotten) in between: vanishingly rare
        raise _refuse(f"key {claim.key!r} was taken and released by a concurrent request; send the request again")
    return _matching(stored, claim.kind, claim.request_hash)


def replay(response: Response, found: T | None, kind: str, resource_id: str, location: str) -> T:
    """Answer a replay with what the key created: 200, `Idempotent-Replayed: true`, its
    Location; 409 if it was deleted since."""
    if found is None:
        raise HTTPException(
            status_code=409,
            detail=f"the {kind} this Idempotency-Key created ({resource_id}) was deleted since; "
            "send the request with a new key to create it again",
        )
    response.status_code = 200
    response.headers[REPLAYED_HEADER] = "true"
    response.headers["Location"] = location
    return found
