"""Which hosts a callback may be sent to: GRADWATCH_CALLBACK_ALLOWED_HOSTS.

Without it the service would POST to any URL a submitter names, from inside the network
it runs in (server-side request forgery). Entries are exact host names or IP addresses,
or `.example.org` for every subdomain of example.org; matching is on the URL's host as
written (no DNS lookup: an allowed name is trusted to resolve where its operator says).
Redirects are never followed, so an allowed host cannot forward the request elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi.exceptions import RequestValidationError

from service.config import Settings


def host_allowed(url: str, allowed: Sequence[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in allowed)


def refusal(url: str, settings: Settings) -> str:
    host = urlsplit(url).hostname or ""
    return (
        f"callback host {host!r} is not allowed; this server sends callbacks only to "
        f"{', '.join(settings.callback_host_list) or 'no host'} "
        "(GRADWATCH_CALLBACK_ALLOWED_HOSTS; ask its operator to add the host)"
    )


def check_notify(notify: Any, settings: Settings, loc: Sequence[str | int]) -> None:
    """422 (as a field error at `loc`) when `notify` names a host outside the allow-list.

    `notify` is a NotifySpec, its JSON dict, or None."""
    if notify is None:
        return
    url = notify["url"] if isinstance(notify, dict) else notify.url
    if not host_allowed(url, settings.callback_host_list):
        raise RequestValidationError(
            [{"loc": ("body", *loc, "url"), "msg": refusal(url, settings), "type": "callback_host_not_allowed"}]
        )
