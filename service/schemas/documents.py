"""Free-form JSON a request carries (a sweep's `base` and `grid`, stored as sent) may hold
only what every store keeps: strings without control characters (see `SafeStr`) and
integers within signed 64 bits (orjson, BIGINT and SQLite's INTEGER stop there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.schemas.limits import INT64_MAX
from service.schemas.text import SAFE_PATTERN, refusal_message

INT64_MIN = -INT64_MAX - 1
# A spec nests three levels deep; orjson refuses to write more than 255 and Python's own
# recursion stops near 1,000, so anything deeper is refused before it could be stored.
MAX_NESTING = 32

# The same rule as a JSON schema, published as a component of the OpenAPI document
# (service/api/openapi.py adds it), for the fields that hold free-form JSON.
STORABLE_JSON_NAME = "StorableJson"
STORABLE_JSON_REF = {"$ref": f"#/components/schemas/{STORABLE_JSON_NAME}"}
STORABLE_JSON_SCHEMA = {
    "description": "Any JSON value whose strings (object keys included) hold no control character and "
    f"whose integers fit in 64 bits, nested at most {MAX_NESTING} levels.",
    "anyOf": [
        {"type": "string", "pattern": SAFE_PATTERN},
        {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
        {"type": "number", "not": {"type": "integer"}},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": STORABLE_JSON_REF},
        {"type": "object", "propertyNames": {"pattern": SAFE_PATTERN}, "additionalProperties": STORABLE_JSON_REF},
    ],
}


def unstorable_values(value: Any, loc: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """422-ready problems (loc, msg, type) for every string (keys included) holding a
    refused character, every integer outside 64 bits, and nesting deeper than MAX_NESTING."""
    problems: list[dict[str, Any]] = []
    if len(loc) > MAX_NESTING and isinstance(value, Mapping | list | tuple):
        return [{"loc": list(loc), "msg": f"nested deeper than {MAX_NESTING} levels", "type": "too_deep"}]
    if isinstance(value, str):
        message = refusal_message(value)
        if message is not None:
            problems.append({"loc": list(loc), "msg": message, "type": "control_character"})
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        problems.append(
            {"loc": list(loc), "msg": f"{value} is outside the signed 64-bit range", "type": "int_out_of_range"}
        )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            key_message = refusal_message(str(key))
            if key_message is not None:
                problems.append({"loc": [*loc, str(key)], "msg": f"the key {key_message}", "type": "control_character"})
                continue
            problems.extend(unstorable_values(item, (*loc, str(key))))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problems.extend(unstorable_values(item, (*loc, index)))
    return problems
