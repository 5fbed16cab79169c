"""pandas DataFrames from the API's answers, for notebooks (`pip install gradwatch[frames]`).

pandas is an optional extra: nothing else in gradwatch imports it, and a missing pandas
says how to install it rather than failing at import time.
"""

from __future__ import annotations

import io
from typing import Any


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "DataFrames need pandas: pip install 'gradwatch[frames]' (or pip install pandas)"
        ) from None
    return pandas


def series_frame(answer: dict[str, Any]) -> Any:
    """`GET /series`'s answer as a DataFrame indexed by `step`, one float column per layer
    in the order the API returns them (input → output); null values become NaN."""
    pd = _pandas()
    columns = {}
    for line in answer["series"]:
        name = line["layer"] if line["layer"] is not None else answer["metric"]
        values = [float("nan") if value is None else value for value in line["values"]]
        columns[name] = pd.Series(values, index=pd.Index(line["steps"], dtype="int64", name="step"), dtype="float64")
    if not columns:
        return pd.DataFrame(index=pd.Index([], dtype="int64", name="step"))
    frame = pd.concat(columns, axis=1).sort_index()
    frame.columns.name = answer["metric"]
    return frame


def export_frame(parquet: bytes) -> Any:
    """The export's Parquet bytes as a long DataFrame: step, metric, layer, timestep, value."""
    pd = _pandas()
    return pd.read_parquet(io.BytesIO(parquet))
