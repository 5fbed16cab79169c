"""Callbacks: a signed JSON POST to the pipeline's URL when a run, or a whole sweep, ends.

- `allowlist.py`: which hosts a `notify.url` may name (checked at submission and again
  before each delivery).
- `signing.py`: the per-owner secret and the HMAC-SHA256 signature headers.
- `events.py`: the event body, built from the stored experiment or sweep.
- `delivery.py`: the API's loop that turns ended runs into events and sends them, with
  retries and backoff, recording every attempt.

Rows live in `service/store/callbacks.py`; the callback itself is inserted by the store
in the transaction that creates the experiment or sweep.
"""
