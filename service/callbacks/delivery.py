"""The API's delivery loop: announce ended runs, send due events, record every attempt.

Who sends, and why it loses nothing: the callback row is written in the transaction that
creates the experiment or sweep, and whether its run has ended is read from the run's
own row. So no process has to remember to send anything: whichever way a run ends (the
worker, a cancel, the reaper, a broker refusal, a time limit) and whichever process dies
meanwhile, the next pass of any API process finds an ended run with a waiting callback.
Every API process runs the loop (next to the reaper, in the app's lifespan); the
conditional UPDATEs of `service.store.callbacks` make each announcement and each attempt
happen once. Delivery is at least once: a process killed between the receiver's 2xx and
recording it sends the event again after the lease, with the same `Gradwatch-Event-Id`.

Retries: an attempt that gets no 2xx (a connection error, a timeout, any other status)
is tried again after callback_retry_initial_s · 2^(n-1), at most
callback_retry_max_interval_s, times a random factor in [0.5, 1] (jitter, so that a
receiver coming back is not hit by every event at once), until callback_retry_for_s
after the run ended; then the callback is `failed`. Redirects are not followed.
"""

from __future__ import annotations

import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
from fastapi import FastAPI

from service.callbacks.allowlist import host_allowed, refusal
from service.callbacks.events import build_event
from service.callbacks.signing import signed_headers
from service.config import Settings
from service.db.base import utcnow
from service.store import callbacks as rows
from service.store.callbacks import AttemptRecord, CallbackRecord

log = logging.getLogger("gradwatch.callbacks")
# How much of a receiver's error answer is kept with the attempt.
MAX_ERROR_TEXT = 300
# Seconds an attempt in flight holds its callback beyond the request timeout.
LEASE_MARGIN_S = 30.0
# Attempts sent at once: one slow receiver must not hold up everyone else's events.
CONCURRENT_SENDS = 8


@dataclass(frozen=True)
class Leased:
    callback: CallbackRecord
    attempt: int
    secret: str


def announce_ended(app: FastAPI) -> int:
    """waiting → pending (with the body) for every callback whose run has ended."""
    settings: Settings = app.state.settings
    announced = 0
    with app.state.session_factory() as session:
        for callback in rows.ended_waiting(session):
            event = build_event(session, callback, settings)
            if rows.announce(session, callback.id, event) and event is not None:
                announced += 1
    return announced


def lease_due(app: FastAPI) -> list[Leased]:
    settings: Settings = app.state.settings
    until = utcnow() + timedelta(seconds=settings.callback_timeout_s + LEASE_MARGIN_S)
    leased = []
    with app.state.session_factory() as session:
        for callback in rows.due_callbacks(session):
            attempt = rows.lease(session, callback, until)
            if attempt is not None:
                leased.append(Leased(callback, attempt, rows.callback_secret(session, callback.owner)))
    return leased


def retry_delay_s(settings: Settings, attempt: int) -> float:
    ceiling = min(settings.callback_retry_max_interval_s, settings.callback_retry_initial_s * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


def send(app: FastAPI, http: httpx.Client, leased: Leased) -> str:
    """One attempt; returns the callback's state after it."""
    settings: Settings = app.state.settings
    callback = leased.callback
    assert callback.event is not None
    body = json.dumps(callback.event, separators=(",", ":"), sort_keys=True).encode()
    started = utcnow()
    clock = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    refused = not host_allowed(callback.url, settings.callback_host_list)
    if refused:  # the allow-list changed since submission: never send, never retry
        error = refusal(callback.url, settings) + " (the allow-list changed since submission)"
    else:
        try:
            response = http.post(
                callback.url, content=body, headers=signed_headers(leased.secret, body, callback.id, leased.attempt)
            )
            status_code = response.status_code
            if not response.is_success:
                error = f"the receiver answered {status_code}: {response.text[:MAX_ERROR_TEXT]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT] or type(exc).__name__
    attempt = AttemptRecord(leased.attempt, started, (time.perf_counter() - clock) * 1000, status_code, error)
    retry_at = None
    if error is None:
        outcome = "delivered"
    else:
        retry_at = utcnow() + timedelta(seconds=retry_delay_s(settings, leased.attempt))
        triggered = callback.triggered_at or callback.created_at
        given_up = retry_at > triggered + timedelta(seconds=settings.callback_retry_for_s)
        outcome = "failed" if given_up or refused else "pending"
        retry_at = None if outcome == "failed" else retry_at
        log.warning("callback %s attempt %d to %s: %s (%s)", callback.id, leased.attempt, callback.url, error, outcome)
    with app.state.session_factory() as session:
        rows.record_attempt(session, callback.id, attempt, outcome, retry_at)
    return outcome


def deliver_once(app: FastAPI) -> list[str]:
    """One pass (the API runs it every callback_poll_s, in its thread pool): announce
    ended runs, then send every due attempt, several at once. Returns the outcomes."""
    settings: Settings = app.state.settings
    announce_ended(app)
    leased = lease_due(app)
    if not leased:
        return []
    # trust_env=False: an HTTP(S)_PROXY of the server's environment must not relay callbacks.
    with (
        httpx.Client(timeout=settings.callback_timeout_s, follow_redirects=False, trust_env=False) as http,
        ThreadPoolExecutor(min(CONCURRENT_SENDS, len(leased)), thread_name_prefix="gradwatch-callback") as pool,
    ):
        return list(pool.map(lambda item: send(app, http, item), leased))
