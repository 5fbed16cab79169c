"""The one place where gradwatch turns Python and numpy values into JSON bytes.

orjson writes NaN, +Inf and -Inf as `null`, so every document we emit or store is valid
JSON (a diverged run's loss is non-finite; PostgreSQL's `json` type rejects `NaN`).
numpy arrays are serialised natively, without a Python loop over their elements.
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """JSON bytes of `value`; non-finite floats (numpy's too) become null."""
    return orjson.dumps(value, option=_OPTIONS, default=_fallback)


def dumps_str(value: Any) -> str:
    return dumps(value).decode()


def _fallback(value: Any) -> Any:
    # numpy scalars inside plain containers (np.float64 is a float subclass, but
    # np.int64 and np.float32 are not).
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
