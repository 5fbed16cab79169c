"""What `GradwatchClient` does when the network or the API stumbles: which answers are
worth another try, how long to wait before it, and how to read a server-sent event
stream. Plain functions, no HTTP of their own, so each can be tested alone.

The wait is "full jitter" exponential backoff (AWS Architecture Blog, Brooker 2015,
"Exponential Backoff and Jitter"): a uniform draw in [0, min(cap, base · 2^attempt)], so
that many pipelines cut off by one outage do not all come back in the same instant. A
`Retry-After` from the server (seconds or an HTTP date) is a floor on that wait. Every
retry stays within the client's total `retry_for` budget; past it, the last error is raised.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

# Worth another try: a gateway or a server that says it is busy or down for now.
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    retry_for: float = 60.0  # total seconds one call may spend retrying; 0 never retries
    base_s: float = 0.5
    cap_s: float = 10.0

    def delay_s(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `attempt` (1, 2, …)."""
        drawn = random.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
        return max(drawn, retry_after or 0.0)


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The response's `Retry-After` in seconds (RFC 9110 §10.2.3), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def should_retry(response: httpx.Response) -> bool:
    """502/503/504, and a 429 that says when to come back (an owner at the active limit
    without Retry-After is told so at once: waiting a minute will not change it)."""
    return response.status_code in RETRY_STATUSES or (
        response.status_code == 429 and "Retry-After" in response.headers
    )


def sse_data(lines: Iterable[str]) -> Iterator[Any]:
    """The `data` of each event of a text/event-stream (WHATWG HTML §9.2), parsed as JSON
    where it is JSON; comments (keep-alives) and other fields are skipped."""
    data: list[str] = []
    # Lazily: each event as it arrives (a list here would wait for the stream's end), and a
    # stream cut off mid-event still yields what it had.
    for line in itertools.chain(lines, [""]):
        if line == "" and data:
            yield _parsed("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
