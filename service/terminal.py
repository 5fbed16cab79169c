"""Stored text made safe to print on a user's terminal.

Names, tags, layer names and error messages come from the database, written by anyone who
can reach the API (or by an older version that accepted control characters). Printed raw,
an ESC sequence in a name could clear the screen, retitle the window or hide text; a
bidirectional override could reorder what the user reads; and rich would read `[red]` as
markup. `shown()` prints every such character as a visible escape instead (`\\x1b`,
`\\u202e`) and escapes rich's markup, so what is stored is what the user sees.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0, DEL, C1, and the bidirectional embedding/override/isolate controls.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object) -> str:
    """`value` as text for rich to print: control characters visible, markup escaped."""
    return escape(_UNPRINTABLE.sub(_visible, str(value)))
