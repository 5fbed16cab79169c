"""`gradwatch reproduce NAME [--wait]` and `gradwatch reproductions`: run a catalogued
study through the API and print, per claim, what was expected and what was measured.

Registered in `service/cli.py`; talks to the API only (never imports torch).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from service.client import GradwatchClient
from service.terminal import shown


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def claims_table(report: dict[str, Any]) -> Table:
    """One row per check: the claim's verdict, what it reads, expected, measured here, measured now."""
    table = Table(title=f"{report['study']}{' (variant)' if report.get('variant') else ''}: reproduced "
                  f"{_value(report['reproduced'])}")
    for column in ("claim", "check", "expected", "measured here", "measured", "passed"):
        table.add_column(column)
    for number, claim in enumerate(report["claims"], 1):
        for row, check in enumerate(claim["checks"]):
            table.add_row(
                f"{number}: {_value(claim['reproduced'])}" if row == 0 else "",
                shown(check["label"]),
                shown(check["expected"]),
                shown(_value(check["measured_here"])),
                shown(_value(check["measured"])),
                _value(check["passed"]),
            )
    return table


def reproduce_command(
    client: GradwatchClient, console: Console, name: str, wait: bool, timeout: float | None, poll: float
) -> dict[str, Any]:
    run = client.reproduce(name)
    console.print(f"started reproduction run [bold]{shown(run['id'])}[/] of {shown(name)} (sweep {shown(run['sweep_id'])})")
    if not wait:
        return run

    def show(report: dict[str, Any]) -> None:
        done = sum(check["passed"] is not None for claim in report["claims"] for check in claim["checks"])
        total = sum(len(claim["checks"]) for claim in report["claims"])
        console.print(f"  {report['status']}: {done} of {total} checks decided", highlight=False)

    report = client.wait_reproduction(run["id"], timeout=timeout, poll=poll, on_update=show)
    console.print(claims_table(report))
    return report
