"""The callback signature: what a receiver computes, and what it must reject."""

from __future__ import annotations

import hashlib
import hmac

from service.callbacks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers, verify

BODY = b'{"id":"e1","type":"experiment.ended"}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    headers = signed_headers("gwcb_secret", BODY, "e1", 3, now=1_764_579_600)
    assert headers[TIMESTAMP_HEADER] == "1764579600"
    expected = hmac.new(b"gwcb_secret", b"1764579600." + BODY, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={expected}"
    assert headers["Gradwatch-Event-Id"] == "e1" and headers["Gradwatch-Delivery-Attempt"] == "3"


def test_verify_rejects_tampering_other_secrets_and_stale_timestamps() -> None:
    headers = signed_headers("s", BODY, "e1", 1, now=1000)
    timestamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify("s", BODY, timestamp, signature, now=1100)
    assert not verify("s", BODY + b" ", timestamp, signature, now=1100)  # body changed
    assert not verify("t", BODY, timestamp, signature, now=1100)  # another secret
    assert not verify("s", BODY, "1001", signature, now=1100)  # timestamp changed: breaks the HMAC
    assert not verify("s", BODY, timestamp, signature, now=1000 + 301)  # replayed too late
    assert not verify("s", BODY, "not-a-number", signature, now=1100)
