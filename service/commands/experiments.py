"""`gradwatch summary`, `delete`, `export` and `open`: one experiment at a time."""

from __future__ import annotations

import json
import webbrowser
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from service.client import GradwatchError
from service.commands.common import ApiUrl, ExperimentId, api_url_of, client_for, console, fail
from service.commands.verdict import print_summary
from service.terminal import shown


def summary(
    experiment_id: ExperimentId,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")] = False,
    api_url: ApiUrl = None,
) -> None:
    """The diagnosis: verdict (vanishing, exploding, healthy), its evidence, and remedies."""
    with client_for(api_url) as client:
        try:
            answer = client.summary(experiment_id)
        except GradwatchError as error:
            raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(answer))
        return
    console.print(f"[bold]{shown(answer['name'])}[/] ({shown(answer['experiment_id'])}, {shown(answer['status'])})")
    print_summary(console, answer)


def delete(
    experiment_ids: Annotated[list[str], typer.Argument(help="The experiments' ids.")],
    api_url: ApiUrl = None,
) -> None:
    """Delete experiments that are not running, with every point they stored."""
    with client_for(api_url) as client:
        for experiment_id in experiment_ids:
            try:
                client.delete(experiment_id)
            except GradwatchError as error:
                raise fail(str(error)) from None
            console.print(f"deleted {shown(experiment_id)}")


class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


def export(
    experiment_id: ExperimentId,
    file_format: Annotated[ExportFormat, typer.Option("--format", help="parquet or csv.")] = ExportFormat.parquet,
    out: Annotated[Path | None, typer.Option("--out", help="The file to write (default: ID.FORMAT here).")] = None,
    api_url: ApiUrl = None,
) -> None:
    """Save every recorded value as one long table: step, metric, layer, timestep, value."""
    target = out or Path(f"{experiment_id}.{file_format.value}")
    with client_for(api_url) as client:
        try:
            content = client.export(experiment_id, file_format.value)
        except GradwatchError as error:
            raise fail(str(error)) from None
    target.write_bytes(content)
    console.print(f"wrote {shown(target)} ({len(content):,} bytes)")


def dashboard_url(api_url: str | None, experiment_id: str) -> str:
    return f"{api_url_of(api_url)}/experiments/{experiment_id}"


def open_page(
    experiment_id: ExperimentId,
    browser: Annotated[bool, typer.Option("--browser", help="Also open it in the default web browser.")] = False,
    api_url: ApiUrl = None,
) -> None:
    """Print the dashboard URL of an experiment (open it with --browser)."""
    with client_for(api_url) as client:
        try:
            client.get(experiment_id)  # an unknown id is an error here, not a 404 page later
        except GradwatchError as error:
            raise fail(str(error)) from None
    url = dashboard_url(api_url, experiment_id)
    typer.echo(url)
    if browser and not webbrowser.open(url):
        raise fail(f"no web browser could be started here: open {url} yourself")
