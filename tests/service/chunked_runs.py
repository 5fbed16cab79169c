"""A generated run (steps, values per layer, chunk bounds) stored as the worker stores it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service import store


def store_chunked(session: Session, run: dict, layers: list[str], newest_first: bool = False) -> str:
    """`run["values"][:, i]` as `grad_norm` of `layers[i]`, one chunk per `run["bounds"]` interval;
    the experiment's id. `newest_first` writes the chunks in reverse (any order must do)."""
    record = store.create_experiment(session, "e", [], {"training": {"steps": 10}}, "cpu")
    store.claim_experiment(session, record.id, "w")
    steps, values, bounds = run["steps"], run["values"], run["bounds"]
    chunks = [
        store.SeriesChunk("grad_norm", layer, position, steps[a:b], values[a:b, position])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        for position, layer in enumerate(layers)
    ]
    store.write_chunks(session, record.id, chunks[::-1] if newest_first else chunks)
    return record.id
