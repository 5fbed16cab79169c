"""examples/: every file is a spec (models/) or a sweep (claims/) the API accepts, the
claims are exactly the specs the end-to-end suite measures the essay's claims with
(tests/e2e/test_pg_redis.py), and /docs shows the same recurrent settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.analysis.sweeps import expand_grid
from service.config import Limits
from service.schemas.examples import SPEC_EXAMPLES
from service.schemas.spec import ExperimentSpec
from service.schemas.sweeps import SweepCreate
from tests.e2e.test_pg_redis import adding_spec, exploding_spec, seed_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TRAINING_FIELDS = ("model", "dataset", "training", "clipping")


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _trained(spec: dict) -> dict:
    """What decides the run: the spec with defaults filled, less its name and tags."""
    full = ExperimentSpec.model_validate(spec).model_dump(mode="json")
    return {key: full[key] for key in TRAINING_FIELDS}


@pytest.mark.parametrize("model_type", ["mlp", "rnn", "lstm", "gru"])
def test_one_spec_per_model_type(model_type: str) -> None:
    spec = ExperimentSpec.model_validate(_load(EXAMPLES / "models" / f"{model_type}.json"))
    assert spec.model.type == model_type


@pytest.mark.parametrize(
    ("claim", "measured"),
    [
        ("vanishing-with-depth", [seed_spec(a, [30, 30]) for a in ("sigmoid", "tanh", "relu")]),
        ("exploding-and-clipping", [exploding_spec({"mode": "none"}), exploding_spec({"mode": "norm", "threshold": 1.0})]),
        ("lstm-through-time", [adding_spec("rnn"), adding_spec("lstm")]),
    ],
)
def test_each_claim_is_the_sweep_the_e2e_suite_measures(claim: str, measured: list[dict]) -> None:
    body = SweepCreate.model_validate(_load(EXAMPLES / "claims" / f"{claim}.sweep.json"))
    members = expand_grid(body.base, body.grid, Limits())
    assert [_trained(m.spec.model_dump(mode="json")) for m in members] == [_trained(spec) for spec in measured]


@pytest.mark.parametrize("model_type", ["rnn", "lstm"])
def test_the_docs_recurrent_examples_are_the_files(model_type: str) -> None:
    """The /docs LSTM learns the adding problem only with these settings (lr 0.01, batch 64)."""
    shown = SPEC_EXAMPLES[model_type]["value"]
    assert _trained(shown) == _trained(_load(EXAMPLES / "models" / f"{model_type}.json"))
