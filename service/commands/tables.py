"""Tables that fit the terminal and never cut a number.

Rich shrinks every column of a table wider than the terminal, and a shrunk number loses
digits behind an ellipsis. Here number columns keep the width of their widest cell and
never wrap (so do ids, to be copied whole); text columns (names, ids, messages) fold onto more lines instead, so every
character of every cell is still printed; and a light box spends one space between
columns, not three.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.table import Table
from rich.text import Text

from service.terminal import shown


@dataclass(frozen=True)
class Column:
    header: str
    number: bool = False  # right-aligned, never wrapped nor cut
    whole: bool = False  # never wrapped nor cut either (an id to copy), left-aligned


def number(value: float | int | None) -> str:
    """Six significant digits (what a gradient magnitude needs); '' for none."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def fitted_table(columns: Sequence[Column], rows: Sequence[Sequence[object]], title: str | None = None,
                 show_header: bool = True) -> Table:
    """A table of `rows` (cells printed through `shown`, so stored text is escaped)."""
    cells = [[shown(cell) for cell in row] for row in rows]
    table = Table(title=title, box=box.SIMPLE_HEAD, show_header=show_header, pad_edge=False, padding=(0, 0))
    for index, column in enumerate(columns):
        if column.number or column.whole:
            widest = max((Text.from_markup(row[index]).cell_len for row in cells), default=0)
            justify = "right" if column.number else "left"
            table.add_column(column.header, justify=justify, no_wrap=True, min_width=max(widest, len(column.header)))
        else:
            table.add_column(column.header, overflow="fold")
    for row in cells:
        table.add_row(*row)
    return table
