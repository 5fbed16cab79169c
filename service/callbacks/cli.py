"""`gradwatch callbacks secret [--rotate]`: the secret your callbacks are signed with.

Through the API, as the configured token's owner. Prints the secret and nothing else, so
that `SECRET=$(gradwatch callbacks secret)` hands it to a receiver's configuration.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="The secret that signs your callbacks (through the API).", no_args_is_help=True)


@app.command()
def secret(
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Replace it first: later deliveries, retries too, use the new one.")
    ] = False,
    api_url: Annotated[str | None, typer.Option(help="Default: GRADWATCH_API_URL.")] = None,
) -> None:
    """Print your owner's callback signing secret (made on first use)."""
    from service.cli import _client, _fail  # the CLI's own client: its token, URL and retries
    from service.client import GradwatchError

    with _client(api_url) as client:
        try:
            typer.echo(client.callback_secret(rotate=rotate))
        except GradwatchError as error:
            raise _fail(str(error)) from None
