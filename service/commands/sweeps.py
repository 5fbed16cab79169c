"""`gradwatch sweep` (submit a grid, follow it) and `gradwatch compare` (any runs, or a
sweep's members, on one metric)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from service.client import GradwatchClient, GradwatchError
from service.commands.common import ApiUrl, Poll, Timeout, client_for, console, fail
from service.commands.tables import Column, fitted_table, number
from service.terminal import shown


def sweep(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A sweep as JSON: {name, base, grid}.")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the members until all have ended.")] = False,
    timeout: Timeout = None,
    poll: Poll = 2.0,
    api_url: ApiUrl = None,
) -> None:
    """Submit a sweep: one experiment per combination of the grid's values. With --wait,
    follow it to the end and print each member's result and verdict (exit status 1 if
    one failed)."""
    try:
        body = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise fail(f"{file} is not valid JSON: {error}") from None
    if not isinstance(body, dict) or "base" not in body or "grid" not in body:
        raise fail(f"{file} must be an object with `base` (an experiment spec) and `grid` (path → values)")
    with client_for(api_url) as client:
        try:
            created = client.submit_sweep(body["base"], body["grid"], name=body.get("name"), notify=body.get("notify"))
            console.print(f"submitted sweep [bold]{shown(created['id'])}[/] ({created['size']} experiments)")
            if not wait:
                _print_members(created)
                return
            finished = _follow(client, created["id"], timeout, poll)
            verdicts = {m["id"]: _verdict(client, m["id"]) for m in finished["members"]}
        except (GradwatchError, TimeoutError) as error:
            raise fail(str(error)) from None
    _print_members(finished, verdicts)
    if any(m["status"] == "failed" for m in finished["members"]):
        raise typer.Exit(1)


def _follow(client: GradwatchClient, sweep_id: str, timeout: float | None, poll: float) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    last = ""
    while True:
        state = client.sweep(sweep_id)
        counts = ", ".join(f"{count} {status}" for status, count in sorted(state["status_counts"].items()))
        if counts != last:
            console.print(f"{shown(state['status'])}: {shown(counts)}")
            last = counts
        if state["status"] == "finished":
            return state
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"sweep {sweep_id} is still {state['status']} after {timeout:g} s ({counts})")
        time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))


def _verdict(client: GradwatchClient, experiment_id: str) -> str:
    try:
        return client.summary(experiment_id)["verdict"]
    except GradwatchError:
        return ""  # a run that stored nothing has no verdict


def _print_members(state: dict[str, Any], verdicts: dict[str, str] | None = None) -> None:
    columns = [Column("id", whole=True), Column("label"), Column("status", whole=True), Column("loss", True),
               Column("test acc", True)]  # fmt: skip
    if verdicts is not None:
        columns.append(Column("verdict", whole=True))
    rows = []
    for member in state["members"]:
        result = member.get("result") or {}
        row = [member["id"], member["label"], member["status"], number(result.get("final_loss")),
               number(result.get("test_accuracy"))]  # fmt: skip
        rows.append(row + ([verdicts.get(member["id"], "")] if verdicts is not None else []))
    console.print(fitted_table(columns, rows, title=f"sweep {shown(state['name'])} ({shown(state['status'])})"))


def compare(
    experiment_ids: Annotated[list[str] | None, typer.Argument(help="Experiment ids (any, sweep or not).")] = None,
    sweep_id: Annotated[str | None, typer.Option("--sweep", help="Compare this sweep's members instead.")] = None,
    metric: Annotated[str | None, typer.Option(help="The metric (default: the server's, loss).")] = None,
    layer: Annotated[str | None, typer.Option(help="The layer (default: each run's input-most).")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="Also save the comparison's picture here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")] = False,
    api_url: ApiUrl = None,
) -> None:
    """Runs side by side on one metric and layer: labelled by what differs between them,
    with the first, last and smallest value of each, and each one's verdict."""
    if bool(experiment_ids) == bool(sweep_id):
        raise fail("name experiment ids, or a sweep with --sweep (not both)")
    params = {"metric": metric, "layer": layer}
    with client_for(api_url) as client:
        try:
            if sweep_id:
                answer = client.compare(sweep_id, **params)
                path, query = f"/sweeps/{sweep_id}/compare.png", params
            else:
                answer = client.compare_experiments(experiment_ids or [], **params)
                path, query = "/compare.png", {"ids": ",".join(experiment_ids or []), **params}
            picture = client.plot(path, **query) if png else None
        except GradwatchError as error:
            raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(answer))
    else:
        _print_comparison(answer)
    if png and picture is not None:
        png.write_bytes(picture)
        console.print(f"wrote {shown(png)}")


def _print_comparison(answer: dict[str, Any]) -> None:
    with_summary = any("summary" in m for m in answer["members"])
    columns = [Column("label"), Column("status", whole=True), Column("layer"), Column("first", True), Column("last", True),
               Column("min", True)]  # fmt: skip
    if with_summary:
        columns.append(Column("verdict", whole=True))
    rows = []
    for member in answer["members"]:
        finite = [v for v in member["values"] if v is not None and math.isfinite(v)]
        row = [member["label"] or member["name"], member["status"], member["layer"] or "",
               number(finite[0] if finite else None), number(finite[-1] if finite else None),
               number(min(finite) if finite else None)]  # fmt: skip
        if with_summary:
            row.append(member["summary"]["verdict"])
        rows.append(row)
    varying = ", ".join(answer["varying"]) or "nothing"
    console.print(fitted_table(columns, rows, title=f"{shown(answer['metric'])} (differing: {shown(varying)})"))
    if with_summary:
        for member in answer["members"]:
            console.print(f"[bold]{shown(member['label'] or member['name'])}[/]: {shown(member['summary']['headline'])}")
