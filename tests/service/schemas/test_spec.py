"""ExperimentSpec: defaults, limits named in messages, and the cross-field rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from service.config import Limits
from service.schemas.examples import SPEC_EXAMPLES
from service.schemas.spec import ExperimentSpec


def _errors(data: dict[str, Any], **context: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate(data, context=context or None)
    return info.value.errors()


def test_only_model_type_and_dataset_name_are_required() -> None:
    spec = ExperimentSpec.model_validate({"model": {"type": "lstm"}, "dataset": {"name": "adding"}})
    assert spec.name == "lstm-adding"
    assert spec.dataset.seq_len == 50 and spec.training.steps == 1000
    assert spec.training.momentum == 0.0 and spec.queue == "cpu"
    missing = {tuple(e["loc"]) for e in _errors({})}
    assert missing == {("model",), ("dataset",)}


@pytest.mark.parametrize("model_type", sorted(SPEC_EXAMPLES))
def test_examples_are_valid_and_a_dump_resubmits(model_type: str) -> None:
    spec = ExperimentSpec.model_validate(SPEC_EXAMPLES[model_type]["value"])
    assert spec.model.type == model_type
    dumped = spec.model_dump(mode="json")
    assert ExperimentSpec.model_validate(dumped).model_dump(mode="json") == dumped


def test_default_field_limits_admit_real_studies() -> None:
    # Each field's own limit admits these; the whole-spec budgets (tests/service/budgets)
    # are what refuse them at their defaults, so they are raised here.
    budgets = {"limits": Limits(max_parameters=10**12, max_run_memory_bytes=2**60, max_points_per_experiment=10**13)}
    spec = ExperimentSpec.model_validate(
        {
            "model": {"type": "rnn", "hidden_size": 4096, "num_layers": 64},
            "dataset": {"name": "adding", "seq_len": 10_000},
            "training": {"steps": 1_000_000},
        },
        context=budgets,
    )
    assert spec.training.steps == 1_000_000
    deep = {"model": {"type": "mlp", "hidden_sizes": [4096] * 64}, "dataset": {"name": "mnist"}}
    assert len(ExperimentSpec.model_validate(deep, context=budgets).model.hidden_sizes) == 64


@pytest.mark.parametrize(
    ("patch", "loc", "limit"),
    [
        ({"training": {"steps": 1_000_001}}, ("training", "steps"), "max_steps"),
        ({"model": {"type": "mlp", "hidden_sizes": [10] * 65}}, ("model", "hidden_sizes"), "max_depth"),
        ({"model": {"type": "mlp", "hidden_sizes": [10, 4097]}}, ("model", "hidden_sizes", 1), "max_width"),
        ({"training": {"batch_size": 70_000}, "dataset": {"name": "mnist", "limit": 1_000_000}},
         ("training", "batch_size"), "max_batch_size"),
        ({"tags": [f"t{i}" for i in range(33)]}, ("tags",), "max_tags"),
        ({"name": "x" * 201}, ("name",), "max_name_length"),
    ],
)  # fmt: skip
def test_limits_are_named(patch: dict[str, Any], loc: tuple, limit: str) -> None:
    data: dict[str, Any] = {"model": {"type": "mlp"}, "dataset": {"name": "mnist"}} | patch
    [error] = _errors(data)
    assert tuple(error["loc"]) == loc
    assert error["type"] == "limit_exceeded"
    assert limit in error["msg"] and f"GRADWATCH_LIMIT_{limit.upper()}" in error["msg"]


def test_recurrent_limits() -> None:
    data = {"model": {"type": "lstm", "num_layers": 65}, "dataset": {"name": "copy", "seq_len": 10_001}}
    errors = {tuple(e["loc"]): e["msg"] for e in _errors(data)}
    assert "max_depth" in errors[("model", "num_layers")]
    assert "max_seq_len" in errors[("dataset", "seq_len")]


def test_limits_from_the_validation_context() -> None:
    data = {"model": {"type": "mlp"}, "dataset": {"name": "mnist"}, "training": {"steps": 200}}
    [error] = _errors(data, limits=Limits(max_steps=100))
    assert "above the limit 100" in error["msg"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"model": {"type": "mlp"}, "dataset": {"name": "adding"}}, ["sequence task", "mlp"]),
        ({"model": {"type": "lstm"}, "dataset": {"name": "mnist"}}, ["sequence task", "sequential_mnist"]),
        ({"model": {"type": "gru", "activation": "relu"}, "dataset": {"name": "adding"}}, ["model.activation"]),
        ({"model": {"type": "rnn", "forget_bias": 2.0}, "dataset": {"name": "adding"}}, ["forget_bias", "lstm"]),
        ({"model": {"type": "mlp", "init": {"spectral_radius": 1.1}}, "dataset": {"name": "mnist"}}, ["spectral_radius"]),
        ({"model": {"type": "mlp", "init": {"scheme": "identity"}}, "dataset": {"name": "mnist"}}, ["identity", "rnn"]),
        ({"model": {"type": "mlp"}, "dataset": {"name": "mnist", "seq_len": 10}}, ["dataset.seq_len"]),
        ({"model": {"type": "rnn"}, "dataset": {"name": "sequential_mnist", "seq_len": 100}}, ["784", "28"]),
        ({"model": {"type": "rnn"}, "dataset": {"name": "adding", "permuted": True}}, ["permuted"]),
        ({"model": {"type": "mlp"}, "dataset": {"name": "mnist"}, "training": {"optimizer": "adam", "momentum": 0.9}}, ["momentum"]),
        ({"model": {"type": "mlp"}, "dataset": {"name": "mnist"}, "training": {"nesterov": True}}, ["nesterov"]),
        ({"model": {"type": "mlp"}, "dataset": {"name": "mnist", "limit": 10}}, ["batch_size", "dataset.limit"]),
        ({"model": {"type": "mlp"}, "dataset": {"name": "mnist"}, "training": {"steps": 5}, "logging": {"every": 10}}, ["logging.every"]),
    ],
)  # fmt: skip
def test_cross_field_rules(data: dict[str, Any], words: list[str]) -> None:
    [error] = _errors(data)
    for word in words:
        assert word in error["msg"]


def test_unknown_fields_and_wrong_types() -> None:
    errors = _errors(
        {"model": {"type": "mlp", "depth": 3}, "dataset": {"name": "mnist"}, "training": {"lr": "fast"}}
    )
    found = {tuple(e["loc"]): e["type"] for e in errors}
    assert found == {("model", "depth"): "extra_forbidden", ("training", "lr"): "float_parsing"}


def test_momentum_defaults_by_optimizer_and_cuda_goes_to_gpu() -> None:
    base = {"model": {"type": "mlp"}, "dataset": {"name": "mnist"}}
    spec = ExperimentSpec.model_validate(base | {"training": {"optimizer": "momentum"}, "device": "cuda"})
    assert spec.training.momentum == 0.9 and spec.queue == "gpu"
    spec = ExperimentSpec.model_validate(base | {"training": {"optimizer": "adam"}})
    assert spec.training.momentum is None
    spec = ExperimentSpec.model_validate(base | {"training": {"schedule": "step", "steps": 300}})
    assert spec.training.lr_step_size == 100


def test_training_loss_resolves_by_task_and_refuses_cross_entropy_for_regression() -> None:
    mlp = {"model": {"type": "mlp"}, "dataset": {"name": "digits"}}
    assert ExperimentSpec.model_validate(mlp).training.loss == "cross_entropy"
    square = ExperimentSpec.model_validate({**mlp, "training": {"loss": "mse"}})
    assert square.training.loss == "mse"
    adding = {"model": {"type": "lstm"}, "dataset": {"name": "adding"}}
    assert ExperimentSpec.model_validate(adding).training.loss == "mse"
    errors = _errors({**adding, "training": {"loss": "cross_entropy"}})
    assert "regression" in errors[0]["msg"] and "adding" in errors[0]["msg"]


def test_curvature_and_histogram_settings() -> None:
    base = {"model": {"type": "mlp"}, "dataset": {"name": "digits"}}
    spec = ExperimentSpec.model_validate(base)
    assert spec.logging.curvature_every is None and spec.logging.histogram_every is None
    spec = ExperimentSpec.model_validate(
        {**base, "logging": {"curvature_every": 10, "curvature_iterations": 50, "curvature_trace_samples": 8, "histogram_every": 5}}
    )
    assert spec.logging.curvature_iterations == 50 and spec.logging.curvature_batch == 1000
    # A curvature knob without curvature_every would silently do nothing: refused.
    errors = _errors({**base, "logging": {"curvature_iterations": 50}})
    assert "curvature_every" in errors[0]["msg"]
    errors = _errors({**base, "logging": {"curvature_every": 1, "curvature_iterations": 2_000}})
    assert "max_curvature_iterations" in errors[0]["msg"]
    small = Limits(max_curvature_trace_samples=4)
    errors = _errors({**base, "logging": {"curvature_every": 1, "curvature_trace_samples": 5}}, limits=small)
    assert "max_curvature_trace_samples" in errors[0]["msg"]


def test_strict_integer_knobs_take_whole_numbers_written_as_floats() -> None:
    """JSON Schema counts 45037.0 as an integer (Schemathesis sent one): the API takes it,
    while false, "12" and 1.5 stay refused."""
    from service.schemas.spec import LoggingSpec

    logging = LoggingSpec(checkpoint_every=45037.0, histogram_every=10.0, curvature_every=5.0, curvature_batch=64.0)
    assert (logging.checkpoint_every, logging.histogram_every, logging.curvature_every, logging.curvature_batch) == (45037, 10, 5, 64)
    assert isinstance(logging.checkpoint_every, int)
    for refused in (False, "12", 1.5):
        with pytest.raises(ValidationError):
            LoggingSpec(checkpoint_every=refused)
