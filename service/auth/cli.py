"""`gradwatch token create|list|revoke`: API tokens, managed straight in the database.

They need no running API and no token, so an operator can make the first admin token
of a fresh deployment (`docker compose run --rm api gradwatch token create --owner admin
--scope admin`). `create` prints the token on stdout and nothing else, so that
`TOKEN=$(gradwatch token create --owner alice)` captures it; it is shown only this once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from sqlalchemy.orm import Session

import typer
from rich.console import Console
from rich.markup import escape

from service import store
from service.auth.guard import OWNER_PATTERN
from service.auth.tokens import Scope, issue_token
from service.config import settings
from service.db.engine import one_off_session

app = typer.Typer(help="Create, list and revoke API tokens (directly in the database).", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def _database() -> Iterator[Session]:
    """A session on the configured database; a missing table or server becomes one line."""
    try:
        with one_off_session(settings.resolved_database_url) as session:
            yield session
    except sa.exc.DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise _fail(
            f"the database ({sa.engine.make_url(settings.resolved_database_url).render_as_string(hide_password=True)}) "
            f"refused: {reason}. Is GRADWATCH_DATABASE_URL right, and has `gradwatch migrate` run?"
        ) from None


@app.command()
def create(
    owner: Annotated[str, typer.Option(help="Whose experiments and sweeps the token acts on.")],
    scope: Annotated[Scope, typer.Option(help="read: read only; write: also submit, cancel, delete; admin: everyone's.")] = Scope.write,
    name: Annotated[str, typer.Option(help="A label saying what the token is for.")] = "",
) -> None:
    """Create a token and print it (only this once; the database keeps its hash)."""
    if not re.fullmatch(OWNER_PATTERN, owner):
        raise _fail(f"owner {owner!r} is not a valid name: 1-100 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    if len(name) > 200:
        raise _fail(f"the name is {len(name)} characters long; at most 200")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):  # `token list` prints it to terminals
        raise _fail("the name contains a control character (a newline, tab, escape…): use printable text")
    with _database() as session:
        token = issue_token(session, owner, scope, name or f"{owner} ({scope.value})")
    typer.echo(token)


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command("list")
def list_tokens(owner: Annotated[str | None, typer.Option(help="Only this owner's tokens.")] = None) -> None:
    """Every token with its id (for `revoke`), owner, scope, name and times; never a secret.

    One token per line, columns separated by two spaces, so that it greps and never wraps.
    """
    with _database() as session:
        tokens = store.list_tokens(session, owner)
    rows = [("id", "owner", "scope", "created", "last used", "revoked", "name")]
    rows += [
        (t.id, t.owner, t.scope, _when(t.created_at), _when(t.last_used_at) or "never", _when(t.revoked_at) or "-", t.name)
        for t in tokens
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))


@app.command()
def revoke(token_id: Annotated[str, typer.Argument(help="The token's id, from `gradwatch token list`.")]) -> None:
    """Revoke a token: every request with it is then answered 401."""
    with _database() as session:
        record = store.revoke_token(session, token_id)
    if record is None:
        raise _fail(f"no token has id {token_id!r}: `gradwatch token list` shows the ids")
    console.print(f"revoked token {record.id} ({escape(record.name)!s} of {escape(record.owner)}) at {_when(record.revoked_at)}")
