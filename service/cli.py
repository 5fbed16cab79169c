"""The `gradwatch` command: run the service, and talk to it.

Running it:
    gradwatch up [--host --port]     the embedded default: SQLite + filesystem broker under
                                     GRADWATCH_HOME, the API and one worker; Ctrl-C stops both
    gradwatch migrate                apply the Alembic migrations (compose's one-shot service)
    gradwatch api [--host --port]    the API alone (compose)
    gradwatch worker [--queue --concurrency --pool]   a Celery worker (compose)

Tokens (straight in the database; see service/auth/cli.py):
    gradwatch token create --owner NAME [--scope read|write|admin] [--name LABEL]
    gradwatch token list     gradwatch token revoke ID

Talking to it (through `service.client`, at --api-url / GRADWATCH_API_URL, sending
GRADWATCH_TOKEN or the token in $GRADWATCH_HOME/token):
    gradwatch submit spec.json [--wait]     gradwatch status ID     gradwatch list
    gradwatch series ID --metric NAME [--layer L] [--max-points N]  gradwatch cancel ID
    gradwatch summary ID    gradwatch delete ID…    gradwatch export ID [--format csv]
    gradwatch sweep sweep.json [--wait]     gradwatch compare ID ID… | --sweep ID [--metric]
    gradwatch open ID [--browser]           the experiment's dashboard page
    gradwatch callbacks secret [--rotate]   the secret your callbacks are signed with
(those of service/commands/, registered below)
    gradwatch reproduce NAME [--wait]       run a catalogued study, print its claims

This module never imports torch (nor `workers`, except inside `worker`): `up` starts the
worker as a process of its own.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from service.auth import cli as token_cli
from service.auth.guard import AuthConfigError, check_binding
from service.auth.token_file import configured_token, ensure_local_token
from service.terminal import shown
from service.callbacks import cli as callbacks_cli
from service.client import GradwatchClient, GradwatchError
from service.commands import experiments as experiment_commands
from service.commands import sweeps as sweep_commands
from service.commands.common import ApiUrl, ExperimentId, console
from service.commands.common import client_for as _client
from service.commands.common import fail as _fail
from service.commands.tables import Column, fitted_table, number
from service.commands.verdict import print_summary
from service.config import settings
from service.plot_cli import plot_command
from service.reproduce_cli import reproduce_command
from service.instance import AlreadyRunning, claim_instance
from service.supervisor import RestartPolicy, supervise

app = typer.Typer(
    name="gradwatch",
    help="Train networks and watch their gradients vanish or explode, over a REST API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(token_cli.app, name="token")
app.add_typer(callbacks_cli.app, name="callbacks")
app.command()(experiment_commands.summary)
app.command()(experiment_commands.delete)
app.command()(experiment_commands.export)
app.command("open")(experiment_commands.open_page)
app.command()(sweep_commands.sweep)
app.command()(sweep_commands.compare)


class Pool(str, Enum):
    """Celery pools that are safe with CUDA (never fork after CUDA is initialised).

    prefork: the parent imports only `workers.celery_app` and `workers.tasks`, which never
    import torch; each child imports torch inside its first task and never forks, so
    CUDA is only ever initialised in a process that will not fork. One child per
    `--concurrency`, each isolated (a crash or an out-of-memory kill loses one run).
    solo: the task runs in the worker process itself (no fork at all): the simplest choice
    for one GPU per worker. threads: several runs share one process and one CUDA context.
    """

    prefork = "prefork"
    solo = "solo"
    threads = "threads"


QUEUES = ("cpu", "gpu")

Host = Annotated[str, typer.Option(help="Interface the API listens on.")]
Port = Annotated[int, typer.Option(help="Port the API listens on.")]


# -- running the service -----------------------------------------------------------------


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic `upgrade head`)."""
    from service.db.migrate import upgrade

    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    database = _safe_url(settings.resolved_database_url)
    console.print(f"database is at the latest revision: {database}", soft_wrap=True)


@app.command()
def api(
    host: Host = settings.api_host,
    port: Port = settings.api_port,
    workers: Annotated[
        int, typer.Option(min=1, help="API processes (more serve more concurrent clients; each has its own pool).")
    ] = 1,
) -> None:
    """Serve the REST API (the schema must exist: run `gradwatch migrate` first)."""
    import uvicorn

    try:
        check_binding(settings, host)
    except AuthConfigError as error:
        raise _fail(str(error)) from None
    settings.home.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        # uvicorn's supervisor starts each process from the import string and handles the
        # signals itself.
        uvicorn.run("service.api.main:app", host=host, port=port, workers=workers, log_level="info")
        return
    from service.api.main import create_app

    # uvicorn re-raises the signal that stopped it once it has shut down; ignoring it here
    # makes SIGINT/SIGTERM a clean exit (status 0) instead of a traceback or a kill.
    for handled in (signal.SIGINT, signal.SIGTERM):
        signal.signal(handled, signal.SIG_IGN)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command()
def worker(
    queue: Annotated[
        str,
        typer.Option(help="Queues to consume, comma-separated: cpu, gpu (device cuda → gpu)."),
    ] = "cpu",
    concurrency: Annotated[int, typer.Option(min=1, help="Experiments trained at once.")] = 1,
    pool: Annotated[
        Pool, typer.Option(help="Celery pool; each of them is CUDA-safe (see `Pool`).")
    ] = Pool.prefork,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker that trains experiments (on CUDA when it has it)."""
    queues = [name.strip() for name in queue.split(",") if name.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        named = ", ".join(unknown) or repr(queue)
        raise _fail(f"unknown queue {named}: choose from {', '.join(QUEUES)}")
    if settings.uses_embedded_broker:
        settings.home.mkdir(parents=True, exist_ok=True)
    from workers.celery_app import app as celery_app

    celery_app.worker_main(
        [
            "worker",
            f"--queues={','.join(queues)}",
            f"--concurrency={concurrency}",
            f"--pool={pool.value}",
            f"--loglevel={loglevel}",
            f"--hostname={'-'.join(queues)}@%h",
            # Workers never talk to each other: no start-up sync, no gossip traffic.
            "--without-mingle",
            "--without-gossip",
        ]
    )


@app.command()
def up(
    host: Host = settings.api_host,
    port: Port = settings.api_port,
    grace: Annotated[
        float,
        typer.Option(help="Seconds the worker gets to stop after Ctrl-C before it is killed."),
    ] = 20.0,
) -> None:
    """The embedded default: migrate, then run the API and one worker until Ctrl-C.

    Needs no external service: a SQLite database and kombu's filesystem broker under
    GRADWATCH_HOME (default ~/.gradwatch), unless GRADWATCH_DATABASE_URL or
    GRADWATCH_BROKER_URL point elsewhere. An experiment still running when the worker is
    stopped after the grace period is marked failed by the stale-heartbeat reaper. A
    worker or API that dies is restarted (service/supervisor.py); a second `up` on the
    same home or port says where gradwatch already runs and exits 1.
    """
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{local_host}:{port}"
    try:
        with claim_instance(settings.home, host, port, url):
            exit_code = _run_up(host, port, url, grace)
    except AlreadyRunning as error:
        raise _fail(str(error)) from None
    if exit_code:
        raise typer.Exit(exit_code)
    console.print("gradwatch stopped")


def _run_up(host: str, port: int, url: str, grace: float) -> int:
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate()
    if ensure_local_token(settings):  # first start: a token for this machine's CLI and client
        console.print(f"created an admin API token in {settings.token_file} (mode 0600)", soft_wrap=True, markup=False)
    console.print(
        f"gradwatch is starting at http://{host}:{port} (data in {settings.home}); "
        "Ctrl-C stops it",
        soft_wrap=True,
    )
    me = [sys.executable, "-m", "service.cli"]
    return supervise(
        {
            "api": [*me, "api", "--host", host, "--port", str(port)],
            # The only worker of this machine takes both queues; it trains on CUDA if it has it.
            "worker": [*me, "worker", "--queue", ",".join(QUEUES)],
        },
        health_url=url,
        grace=grace,
        say=lambda message: console.print(f"gradwatch: {message}", soft_wrap=True),
        policy=RestartPolicy.from_settings(settings),
    )


# -- talking to the service ---------------------------------------------------------------


@app.command()
def submit(
    spec: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="An ExperimentSpec as JSON.")
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until it ends, then a summary.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Give up waiting after this many seconds.")
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between polls while waiting.")] = 1.0,
    api_url: ApiUrl = None,
) -> None:
    """Submit an experiment; with --wait, follow it to the end (exit status 1 if it failed)."""
    try:
        body = json.loads(spec.read_text())
    except json.JSONDecodeError as error:
        raise _fail(f"{spec} is not valid JSON: {error}") from None
    with _client(api_url) as client:
        try:
            experiment = client.submit(body)
            console.print(f"submitted [bold]{shown(experiment['id'])}[/] ({shown(experiment['status'])})")
            if wait:
                experiment = _follow(client, experiment, timeout, poll)
                summary = _summary_if_any(client, experiment["id"])
        except (GradwatchError, TimeoutError) as error:
            raise _fail(str(error)) from None
    if wait:
        _print_experiment(experiment)
        if summary is not None:
            print_summary(console, summary, evidence=False)
        if experiment["status"] == "failed":
            raise typer.Exit(1)


def _summary_if_any(client: GradwatchClient, experiment_id: str) -> dict[str, Any] | None:
    """The verdict of a finished run; None for one that stored nothing to judge."""
    try:
        return client.summary(experiment_id)
    except GradwatchError as error:
        if error.status_code == 404:
            return None
        raise


def _follow(
    client: GradwatchClient, experiment: dict[str, Any], timeout: float | None, poll: float
) -> dict[str, Any]:
    """A progress bar fed by polling the experiment, until it reaches a final status."""
    columns = (
        TextColumn("{task.description:>9}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[steps]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(experiment["status"], total=None, steps="")

        def show(state: dict[str, Any]) -> None:
            step = (state.get("progress") or {}).get("step") or 0
            total = (state.get("progress") or {}).get("total")
            progress.update(
                bar, description=state["status"], completed=step, total=total,
                steps=_progress_text(state),
            )

        return client.wait(experiment["id"], timeout=timeout, poll=poll, on_update=show)


@app.command()
def status(experiment_id: ExperimentId, api_url: ApiUrl = None) -> None:
    """Show one experiment: status, progress, result or error."""
    with _client(api_url) as client:
        try:
            experiment = client.get(experiment_id)
        except GradwatchError as error:
            raise _fail(str(error)) from None
    _print_experiment(experiment)


@app.command()
def cancel(experiment_id: ExperimentId, api_url: ApiUrl = None) -> None:
    """Stop a queued or running experiment within a few steps; it keeps what it measured."""
    with _client(api_url) as client:
        try:
            experiment = client.cancel(experiment_id)
        except GradwatchError as error:
            raise _fail(str(error)) from None
    now = (experiment or {}).get("status", "unknown")
    console.print(f"cancel requested for {shown(experiment_id)} (now {shown(now)})")


@app.command()
def reproduce(
    name: Annotated[str, typer.Argument(help="A study of the catalogue (GET /api/v1/reproductions).")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow it to the end, then print each claim.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Give up waiting after this many seconds.")] = None,
    poll: Annotated[float, typer.Option(help="Seconds between polls while waiting.")] = 2.0,
    api_url: ApiUrl = None,
) -> None:
    """Run a catalogued study; with --wait, print each claim's expected and measured numbers
    (exit status 1 when a claim did not reproduce)."""
    with _client(api_url) as client:
        try:
            report = reproduce_command(client, console, name, wait, timeout, poll)
        except (GradwatchError, TimeoutError) as error:
            raise _fail(str(error)) from None
    if wait and report["reproduced"] is not True:
        raise typer.Exit(1)


@app.command()
def plot(
    experiment_id: ExperimentId,
    out: Annotated[Path, typer.Option("--out", help="Folder to save the PNG files in.")] = Path("."),
    metric: Annotated[str, typer.Option(help="The per-layer metric to draw.")] = "grad_mean_abs",
    api_url: ApiUrl = None,
) -> None:
    """Save an experiment's pictures (curves per layer, depth profile, timesteps) as PNG."""
    try:
        written = plot_command(experiment_id, out, metric, api_url or settings.resolved_api_url, token=configured_token(settings) or "")
    except GradwatchError as error:
        raise _fail(str(error)) from None
    for path in written:
        console.print(shown(path))


@app.command("list")
def list_experiments(
    status_filter: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only experiments with this tag.")] = None,
    name: Annotated[str | None, typer.Option(help="Only experiments with this name.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    api_url: ApiUrl = None,
) -> None:
    """List experiments, newest first."""
    with _client(api_url) as client:
        try:
            page = client.list(status=status_filter, tag=tag, name=name, limit=limit)
        except GradwatchError as error:
            raise _fail(str(error)) from None
    rows = [
        (e["id"], e.get("name") or "", e.get("owner") or "", e["status"], _progress_text(e), _created(e))
        for e in page["items"]
    ]
    columns = [Column("id", whole=True), Column("name"), Column("owner"), Column("status", whole=True), Column("progress", True),
               Column("created", True)]  # fmt: skip
    console.print(fitted_table(columns, rows))


def _created(experiment: dict[str, Any]) -> str:
    """`2026-12-01 11:31` (UTC), the minute a run was submitted: enough to tell runs apart."""
    created = experiment.get("created_at") or ""
    return created[:16].replace("T", " ")


@app.command()
def series(
    experiment_id: ExperimentId,
    metric: Annotated[
        str, typer.Option(help="A probe name, e.g. grad_mean_abs, loss, backprop_norm.")
    ],
    layer: Annotated[list[str] | None, typer.Option(help="Only this layer (repeatable).")] = None,
    max_points: Annotated[
        int | None, typer.Option(min=1, help="Downsample each series to this many points.")
    ] = None,
    step_min: Annotated[int | None, typer.Option(help="First step.")] = None,
    step_max: Annotated[int | None, typer.Option(help="Last step.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the API's JSON instead of a summary.")
    ] = False,
    api_url: ApiUrl = None,
) -> None:
    """Summarise (or print as JSON) one metric's series, a row per layer."""
    with _client(api_url) as client:
        try:
            answer = client.series(
                experiment_id, metric, layers=layer or None,
                step_min=step_min, step_max=step_max, max_points=max_points,
            )
        except GradwatchError as error:
            raise _fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(answer))
        return
    rows = []
    for line in answer["series"]:
        steps, values = line["steps"], line["values"]
        finite = [value for value in values if value is not None and math.isfinite(value)]
        rows.append((
            line["layer"] or "(global)",
            str(len(steps)),
            f"{steps[0]}–{steps[-1]}" if steps else "",
            number(values[0] if values else None),
            number(values[-1] if values else None),
            number(min(finite) if finite else None),
            number(max(finite) if finite else None),
        ))
    columns = [Column("layer"), *(Column(name, True) for name in ("points", "steps", "first", "last", "min", "max"))]
    console.print(fitted_table(columns, rows, title=shown(answer["metric"])))


# -- printing -----------------------------------------------------------------------------


def _print_experiment(experiment: dict[str, Any]) -> None:
    rows = [("name", experiment.get("name") or ""), ("owner", experiment.get("owner") or ""),
            ("status", experiment["status"]), ("progress", _progress_text(experiment))]  # fmt: skip
    rows += [(key, experiment.get(key) or "") for key in ("created_at", "started_at", "finished_at")]
    for key, value in (experiment.get("result") or {}).items():
        rows.append((key, number(value) if isinstance(value, float) else value))
    if experiment.get("error"):
        rows.append(("error", experiment["error"]))
    title = f"experiment {shown(experiment['id'])}"
    console.print(fitted_table([Column("field"), Column("value")], rows, title=title, show_header=False))


def _progress_text(experiment: dict[str, Any]) -> str:
    progress = experiment.get("progress") or {}
    return f"{progress.get('step', 0)}/{progress.get('total', '?')}"


def _safe_url(url: str) -> str:
    """The database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    app()
