"""The summary's verdict on the terminal: what was found, the numbers behind it, and what
the literature suggests trying, with the spec change that applies each remedy."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from service.commands.tables import number
from service.terminal import shown

VERDICT_STYLE = {"vanishing": "bold yellow", "exploding": "bold red", "healthy": "bold green"}


def _value(value: Any) -> str:
    return number(value) if isinstance(value, float) else shown(value)


def verdict_line(summary: dict[str, Any]) -> str:
    verdict = summary["verdict"]
    return f"verdict: [{VERDICT_STYLE.get(verdict, 'bold')}]{shown(verdict)}[/]"


def print_summary(console: Console, summary: dict[str, Any], evidence: bool = True) -> None:
    """The verdict, each finding with its evidence, and the remedies."""
    console.print(verdict_line(summary))
    for finding in summary.get("findings") or []:
        console.print(f"  [bold]{shown(finding['kind'])}[/]: {shown(finding['message'])}")
        if evidence:
            for key, value in (finding.get("evidence") or {}).items():
                if not isinstance(value, (list, dict)):  # series stay for --json and the dashboard
                    console.print(f"      {shown(key)} = {_value(value)}")
    remedies = summary.get("remedies") or []
    if remedies:
        console.print("remedies:")
    for remedy in remedies:
        changes = " ".join(f"{shown(path)}={_value(value)}" for path, value in remedy["spec_changes"].items())
        console.print(f"  - {shown(remedy['action'])} [dim]({shown(remedy['reference'])})[/]")
        if changes:
            console.print(f"      try: {changes}")
