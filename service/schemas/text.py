"""`SafeStr`: the only kind of user string the API accepts, in bodies, queries and paths.

Refused, in every string a user sends (names, tags, ids, metric and layer names, sweep
grids, any string inside a spec): every control character — C0 (U+0000–U+001F, tab and
newline included), DEL (U+007F) and C1 (U+0080–U+009F) — and lone surrogates
(U+D800–U+DFFF, which JSON's `\\ud800` escape can smuggle in). Why all of them:

- PostgreSQL cannot store NUL in text or JSONB (psycopg raises DataError) and SQLite can,
  so accepting it would make the two stores disagree; a lone surrogate cannot be encoded
  as UTF-8 at all;
- every user string in gradwatch is a one-line label (a name, a tag, an id, a layer
  name) that the CLI prints in tables, so tab and newline carry no meaning there and an
  ESC (U+001B) would reach a user's terminal as a control sequence.

The JSON schema states the same rule as a `pattern`, so generated clients and
schema-driven fuzzers know it; the validator gives the message (which character, where).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# ECMA-262 and Python agree on this syntax; \x escapes keep the schema printable.
SAFE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
_REFUSED = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def first_refused_character(text: str) -> tuple[int, str] | None:
    """(position, character) of the first character a user string may not hold."""
    found = _REFUSED.search(text)
    return None if found is None else (found.start(), found.group())


def refusal_message(text: str) -> str | None:
    found = first_refused_character(text)
    if found is None:
        return None
    position, character = found
    return (
        f"contains the control character U+{ord(character):04X} at position {position}; "
        "names, tags, ids and every other string may not hold control characters "
        "(U+0000–U+001F, U+007F–U+009F) or lone surrogates: remove it"
    )


def _check(value: str) -> str:
    message = refusal_message(value)
    if message is not None:
        raise PydanticCustomError("control_character", message)
    return value


class _NoControlCharacters:
    """Annotated marker: validates after `str` and publishes `SAFE_PATTERN`."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = SAFE_PATTERN
        return json_schema


NO_CONTROL_CHARACTERS = _NoControlCharacters()
SafeStr = Annotated[str, NO_CONTROL_CHARACTERS]
