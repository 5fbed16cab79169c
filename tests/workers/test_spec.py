"""The stored spec (validated by the API's ExperimentSpec) becomes the engine's RunConfig,
with the worker's own settings: data folder, downloads, flush size."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

import service.schemas.spec as spec_schema
import workers.engine.config as engine_config
from service.config import Settings
from service.schemas.spec import ExperimentSpec
from workers.spec import to_run_config


def stored(spec: dict) -> dict:
    """What the API stores in the experiment row: validated, every default filled in."""
    return ExperimentSpec.model_validate(spec).model_dump(mode="json")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, data_dir=tmp_path / "datasets", allow_download=False, flush_every=37)


def test_the_seed_experiment(settings) -> None:
    config = to_run_config(
        stored(
            {
                "model": {"type": "mlp", "hidden_sizes": [30, 30], "activation": "sigmoid", "init": {"scheme": "xavier_uniform"}},
                "dataset": {"name": "mnist", "split": "test", "limit": 5000},
                "training": {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": 800, "seed": 3},
            }
        ),
        settings,
    )
    assert config.model.kind == "mlp" and config.model.hidden_sizes == (30, 30)
    assert config.model.activation == "sigmoid"
    assert config.init.scheme == "xavier_uniform" and config.init.bias == 0.0
    assert (config.dataset.name, config.dataset.split, config.dataset.limit) == ("mnist", "test", 5000)
    assert config.training.batch_size is None  # full batch
    assert (config.training.optimizer, config.training.lr, config.training.steps) == ("sgd", 0.5, 800)
    assert config.seed == 3


def test_worker_settings_decide_data_downloads_and_flushes(settings, tmp_path) -> None:
    config = to_run_config(stored({"model": {"type": "mlp"}, "dataset": {"name": "mnist"}}), settings)
    assert config.dataset.data_dir == str(tmp_path / "datasets")
    assert config.dataset.download is False
    assert config.probes.flush_every == 37
    default_home = Settings(home=tmp_path / "home", data_dir=None, allow_download=True)
    config = to_run_config(stored({"model": {"type": "mlp"}, "dataset": {"name": "mnist"}}), default_home)
    assert config.dataset.data_dir == str(tmp_path / "home" / "data") and config.dataset.download is True


def test_logging_section_sets_the_probes(settings) -> None:
    spec = {
        "model": {"type": "lstm", "hidden_size": 64},
        "dataset": {"name": "adding", "seq_len": 200},
        "logging": {"every": 5, "flush_every": 8, "max_timesteps": 25, "timesteps_every": 3},
    }
    config = to_run_config(stored(spec), settings)
    assert (config.probes.log_every, config.probes.flush_every, config.probes.max_timesteps) == (5, 8, 25)
    assert config.probes.timesteps_every == 3


def test_exploding_then_clipping(settings) -> None:
    spec = {
        "model": {"type": "mlp", "hidden_sizes": [100, 100, 100], "activation": "relu", "init": {"scheme": "normal", "std": 1.0}},
        "dataset": {"name": "mnist"},
        "training": {"lr": 0.1, "batch_size": 64, "steps": 300},
        "clipping": {"mode": "norm", "threshold": 1.0},
    }
    config = to_run_config(stored(spec), settings)
    assert (config.init.scheme, config.init.std) == ("normal", 1.0)
    assert (config.clipping.mode, config.clipping.max_norm) == ("norm", 1.0)
    assert config.training.batch_size == 64
    value = to_run_config(stored({**spec, "clipping": {"mode": "value", "threshold": 0.25}}), settings)
    assert (value.clipping.mode, value.clipping.max_value) == ("value", 0.25)


def test_recurrent_models_and_generated_tasks(settings) -> None:
    spec = {
        "model": {"type": "lstm", "hidden_size": 64, "num_layers": 2, "forget_bias": 2.0, "init": {"scheme": "orthogonal", "spectral_radius": 1.1}},
        "dataset": {"name": "adding", "seq_len": 1000, "limit": 20000},
        "training": {"optimizer": "adam", "lr": 0.001},
    }
    config = to_run_config(stored(spec), settings)
    assert (config.model.kind, config.model.hidden_size, config.model.num_layers) == ("lstm", 64, 2)
    assert (config.init.forget_bias, config.init.scheme, config.init.spectral_radius) == (2.0, "orthogonal", 1.1)
    assert config.dataset.seq_len == 1000 and config.dataset.num_train == 20000
    assert config.training.optimizer == "adam"


def test_irnn_identity_goes_to_the_recurrent_matrix(settings) -> None:
    config = to_run_config(stored({"model": {"type": "rnn", "activation": "relu", "init": {"scheme": "identity"}}, "dataset": {"name": "adding"}}), settings)
    assert (config.init.scheme, config.init.recurrent_scheme) == ("default", "identity")
    # The API refuses it (tests/service/schemas); a spec stored before that rule still
    # fails in the worker with the same advice rather than a shape error deep in torch.
    legacy = stored({"model": {"type": "mlp"}, "dataset": {"name": "digits"}})
    legacy["model"]["init"]["scheme"] = "identity"
    with pytest.raises(ValueError, match="identity' applies only to recurrent models"):
        to_run_config(legacy, settings)


def test_sequential_mnist_pixels_or_rows(settings) -> None:
    pixels = to_run_config(stored({"model": {"type": "gru"}, "dataset": {"name": "sequential_mnist", "permuted": True}}), settings)
    assert pixels.dataset.pixel_order == "pixels" and pixels.dataset.permuted
    rows = to_run_config(stored({"model": {"type": "gru"}, "dataset": {"name": "sequential_mnist", "seq_len": 28}}), settings)
    assert rows.dataset.pixel_order == "rows"


def test_optimizers_momentum_and_schedules(settings) -> None:
    base = {"model": {"type": "mlp"}, "dataset": {"name": "digits", "limit": 1000}}
    sgd = to_run_config(stored({**base, "training": {"optimizer": "sgd"}}), settings)
    assert sgd.training.optimizer == "sgd"
    heavy_ball = to_run_config(stored({**base, "training": {"optimizer": "sgd", "momentum": 0.5, "nesterov": True}}), settings)
    assert (heavy_ball.training.optimizer, heavy_ball.training.momentum, heavy_ball.training.nesterov) == ("momentum", 0.5, True)
    momentum = to_run_config(stored({**base, "training": {"optimizer": "momentum"}}), settings)
    assert (momentum.training.optimizer, momentum.training.momentum) == ("momentum", 0.9)
    stepped = to_run_config(stored({**base, "training": {"steps": 900, "schedule": "step", "lr_gamma": 0.5, "weight_decay": 1e-4}}), settings)
    assert (stepped.training.schedule, stepped.training.step_size, stepped.training.gamma) == ("step", 300, 0.5)
    assert stepped.training.weight_decay == 1e-4


def test_device_is_passed_through(settings) -> None:
    for device in ("auto", "cpu", "cuda"):
        config = to_run_config(stored({"model": {"type": "mlp"}, "dataset": {"name": "digits"}, "device": device}), settings)
        assert config.device == device


def test_every_openapi_example_converts(settings) -> None:
    from service.schemas.examples import SPEC_EXAMPLES

    assert SPEC_EXAMPLES
    for name, example in SPEC_EXAMPLES.items():
        config = to_run_config(stored(example["value"]), settings)
        assert config.model.kind == example["value"]["model"]["type"], name


@pytest.mark.parametrize(
    ("spec_choices", "engine_choices"),
    [
        (spec_schema.ModelType, engine_config.MODEL_KINDS),
        (spec_schema.Activation, engine_config.ACTIVATIONS),
        (spec_schema.InitScheme, engine_config.RECURRENT_INIT_SCHEMES),
        (spec_schema.DatasetName, engine_config.DATASETS),
        (spec_schema.Optimizer, engine_config.OPTIMIZERS),
        (spec_schema.Schedule, engine_config.SCHEDULES),
        (spec_schema.ClippingMode, engine_config.CLIPPING_MODES),
        (spec_schema.Device, engine_config.DEVICES),
    ],
)
def test_the_api_offers_exactly_what_the_engine_trains(spec_choices, engine_choices) -> None:
    # The service may not import the engine (it would import torch), so the two lists are
    # written twice; this keeps them the same set.
    assert set(typing.get_args(spec_choices)) == set(engine_choices)


@pytest.mark.parametrize(
    ("logging", "steps", "expected"),
    [
        ({}, 300, 100),  # auto: about four per run, on whole flushes of 50
        ({}, 1_000_000, 1_000),  # auto: never more than 20 flushes apart
        ({}, 30, 50),  # a run shorter than one flush: none before its end
        ({"checkpoint_every": "auto"}, 2_000, 500),
        ({"checkpoint_every": 0}, 2_000, 0),
        ({"checkpoint_every": None}, 2_000, 0),
        ({"checkpoint_every": 70}, 2_000, 70),
    ],
)
def test_checkpoint_interval(logging: dict, steps: int, expected: int) -> None:
    from workers.spec import checkpoint_interval

    spec = {"training": {"steps": steps}, "logging": logging}
    assert checkpoint_interval(spec, Settings(flush_every=50), 50) == expected
    if "checkpoint_every" in logging:
        validated = ExperimentSpec.model_validate({"model": {"type": "mlp"}, "dataset": {"name": "digits"}, "logging": logging})
        assert validated.logging.checkpoint_every == logging["checkpoint_every"]
