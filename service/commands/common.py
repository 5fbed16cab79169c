"""What every talking command shares: the consoles, the client, the error exit, and the
option types."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from service.auth.token_file import configured_token
from service.client import GradwatchClient
from service.config import settings
from service.terminal import shown

console = Console()
errors = Console(stderr=True)

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        help="The API's base URL (default: GRADWATCH_API_URL, else http://api_host:api_port).",
    ),
]
ExperimentId = Annotated[str, typer.Argument(help="The experiment's id.")]
Timeout = Annotated[float | None, typer.Option(help="Give up waiting after this many seconds.")]
Poll = Annotated[float, typer.Option(help="Seconds between polls while waiting.")]


def api_url_of(api_url: str | None) -> str:
    return (api_url or settings.resolved_api_url).rstrip("/")


def client_for(api_url: str | None) -> GradwatchClient:
    return GradwatchClient(
        api_url_of(api_url),
        token=configured_token(settings) or "",
        retry_for=settings.client_retry_for_s,
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
