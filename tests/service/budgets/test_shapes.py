"""The budgets' picture of a run (service/budgets/shape.py, parameters.py) against what
the engine really builds: the same parameter tensors, flat buffer and dataset shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.budgets import parameter_count, run_shape
from service.budgets.parameters import flat_buffer_rows, parameter_sizes
from service.config import Settings
from service.schemas.spec import ExperimentSpec
from workers.engine.datasets import load_dataset
from workers.engine.probes import FlatParameters
from workers.engine.trainer import make_model
from workers.spec import to_run_config

SPECS: dict[str, dict[str, Any]] = {
    "mlp on mnist": {"model": {"type": "mlp", "hidden_sizes": [30, 7, 300]}, "dataset": {"name": "mnist", "split": "test", "limit": 700}},
    "mlp on digits": {"model": {"type": "mlp", "hidden_sizes": [1] * 5}, "dataset": {"name": "digits"}},
    "mlp on mnist1d": {"model": {"type": "mlp"}, "dataset": {"name": "mnist1d", "limit": 300}},
    "rnn on adding": {"model": {"type": "rnn", "hidden_size": 24, "num_layers": 3}, "dataset": {"name": "adding", "seq_len": 17, "limit": 90}},
    "lstm on copy": {"model": {"type": "lstm", "hidden_size": 20, "num_layers": 2}, "dataset": {"name": "copy", "seq_len": 5, "limit": 70}},
    "gru on temporal order": {"model": {"type": "gru", "hidden_size": 9}, "dataset": {"name": "temporal_order", "seq_len": 30, "limit": 80}},
    "lstm on row-wise mnist": {"model": {"type": "lstm", "hidden_size": 16}, "dataset": {"name": "sequential_mnist", "seq_len": 28, "split": "test", "limit": 200}},
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shapes_and_parameters_match_the_engine(name: str, mnist_data_dir: Path) -> None:
    spec = ExperimentSpec.model_validate(SPECS[name]).model_dump(mode="json")
    shape = run_shape(spec)
    config = to_run_config(spec, Settings(data_dir=mnist_data_dir, allow_download=False))
    data = load_dataset(config.dataset)
    assert tuple(data.train_x.shape) == (shape.train_count, *shape.sequence)
    assert data.test_x.shape[0] == shape.test_count
    assert (data.num_outputs, data.many_to_many) == (shape.outputs, shape.many_to_many)
    assert (data.task == "classification") == shape.classification

    model = make_model(config, data)
    params = [p for _, p in model.named_parameters()]
    assert [p.numel() for p in params] == parameter_sizes(shape)
    assert sum(p.numel() for p in params) == parameter_count(shape)
    flat = FlatParameters(params, scratch=True)
    assert flat_buffer_rows(parameter_sizes(shape)) == (flat.rows, flat.width)


def test_the_batch_is_the_training_set_when_it_is_full_or_larger() -> None:
    base = {"model": {"type": "mlp"}, "dataset": {"name": "digits", "limit": 100}}
    full = run_shape(ExperimentSpec.model_validate(base | {"training": {"full_batch": True}}).model_dump(mode="json"))
    assert full.full_batch and full.batch == 100
    mini = run_shape(ExperimentSpec.model_validate(base | {"training": {"batch_size": 10}}).model_dump(mode="json"))
    assert not mini.full_batch and mini.batch == 10
