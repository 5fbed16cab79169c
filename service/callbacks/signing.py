"""How a callback is signed, and how a receiver checks it.

Headers of every delivery:
- `Gradwatch-Timestamp`: Unix time in seconds when this attempt was signed;
- `Gradwatch-Signature`: `v1=` + hex HMAC-SHA256 under the owner's callback secret of
  `timestamp + "." + body` (the raw body bytes), as Stripe and Slack sign theirs;
- `Gradwatch-Event-Id`: the same on every retry of one event (receivers de-duplicate);
- `Gradwatch-Delivery-Attempt`: 1, 2, … .

A receiver recomputes the HMAC over the bytes it received, compares in constant time,
and rejects a timestamp further than a few minutes from its clock: a captured request
replayed later then fails, because changing the timestamp breaks the signature. Each
retry is signed afresh with its own timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "Gradwatch-Timestamp"
SIGNATURE_HEADER = "Gradwatch-Signature"
EVENT_ID_HEADER = "Gradwatch-Event-Id"
ATTEMPT_HEADER = "Gradwatch-Delivery-Attempt"
SCHEME = "v1"
# What `verify` accepts by default between the sender's clock and the receiver's.
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def signed_headers(secret: str, body: bytes, event_id: str, attempt: int, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {
        "Content-Type": "application/json",
        "User-Agent": "gradwatch-callbacks/1",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_ID_HEADER: event_id,
        ATTEMPT_HEADER: str(attempt),
    }


def verify(
    secret: str, body: bytes, timestamp: str, received_signature: str, tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does (this function is for receivers written in Python)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(signature(secret, timestamp, body), received_signature)
