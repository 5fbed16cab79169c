"""End to end on the production pair, PostgreSQL + Redis, by HTTP alone: the engine
issue's three scenarios submitted to the API, trained by a real Celery worker process,
polled to completion, and their claims asserted from the JSON series; and a cancel.

One API and one worker (prefork, concurrency 1) serve the whole module; experiments
queue up behind each other exactly as they would in production.
"""

from __future__ import annotations

import math
import time

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(make_pg_redis_stack) -> Stack:
    stack = make_pg_redis_stack(GRADWATCH_WORKER_POLL_S="0.1")
    stack.start_api()
    stack.start_worker()
    return stack


def seed_spec(activation: str, hidden: list[int]) -> dict:
    """The seed notebook: MNIST 784-30-30-10, Xavier-uniform weights, zero biases, full
    batch of 5,000 images, SGD lr 0.5. The claim is about step 0, so a few steps do."""
    return {
        "name": f"seed-{activation}-{len(hidden)}x30",
        "tags": ["seed", "e2e"],
        "model": {"type": "mlp", "hidden_sizes": hidden, "activation": activation, "init": {"scheme": "xavier_uniform"}},
        "dataset": {"name": "mnist", "split": "test", "limit": 5000},
        "training": {"optimizer": "sgd", "lr": 0.5, "full_batch": True, "steps": 3, "seed": 0},
    }


def exploding_spec(clipping: dict) -> dict:
    """MNIST, three ReLU layers of 100, weights N(0, 1), SGD lr 0.1, batch 64."""
    return {
        "name": f"exploding-{clipping['mode']}",
        "tags": ["exploding", "e2e"],
        "model": {"type": "mlp", "hidden_sizes": [100, 100, 100], "activation": "relu", "init": {"scheme": "normal", "std": 1.0}},
        "dataset": {"name": "mnist", "split": "test"},
        "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 64, "steps": 300, "seed": 0},
        "clipping": clipping,
    }


def adding_spec(model: str) -> dict:
    """Adding problem, T = 50, hidden 64, 1,500 Adam steps, norm clipping at 1.0."""
    return {
        "name": f"adding-{model}",
        "tags": ["adding", "e2e"],
        "model": {"type": model, "hidden_size": 64, "num_layers": 1, "activation": "tanh"},
        "dataset": {"name": "adding", "seq_len": 50},
        "training": {"optimizer": "adam", "lr": ADDING_LR, "batch_size": 64, "steps": 1500, "seed": 0},
        "clipping": {"mode": "norm", "threshold": 1.0},
        "logging": {"every": 10, "timesteps_every": 1},
    }


ADDING_LR = 0.01


def weight_layers(series: dict) -> list[dict]:
    return [line for line in series["series"] if line["layer"] and line["layer"].endswith("weight")]


def test_cancel_stops_a_running_experiment_and_keeps_its_points(stack: Stack) -> None:
    client = stack.client
    spec = {
        "name": "cancel-me",
        "model": {"type": "mlp", "hidden_sizes": [64, 64]},
        "dataset": {"name": "digits"},
        "training": {"steps": 1_000_000, "batch_size": 32},
    }
    experiment = client.submit(spec)
    stack.wait_for_step(experiment["id"], 100, timeout=120)
    requested_at = time.monotonic()
    client.cancel(experiment["id"])
    finished = stack.wait(experiment["id"], timeout=30)
    stopped_after_s = time.monotonic() - requested_at
    print(f"cancel took {stopped_after_s:.2f} s")
    assert finished["status"] == "cancelled", finished
    assert stopped_after_s < 5, f"took {stopped_after_s:.1f} s to stop"
    (loss,) = client.series(experiment["id"], "loss")["series"]
    steps = loss["steps"]
    assert steps == list(range(len(steps))), "every step up to the cancel is kept, in order"
    assert 100 <= len(steps) < 1_000_000
    assert finished["progress"]["step"] >= steps[-1]
    stored, distinct = stack.stored_points(experiment["id"])
    assert stored == distinct > 0


def test_seed_experiment_sigmoid_vanishes_where_tanh_and_relu_do_not(stack: Stack) -> None:
    client = stack.client
    runs = {
        ("sigmoid", 2): client.submit(seed_spec("sigmoid", [30, 30])),
        ("tanh", 2): client.submit(seed_spec("tanh", [30, 30])),
        ("relu", 2): client.submit(seed_spec("relu", [30, 30])),
        ("sigmoid", 4): client.submit(seed_spec("sigmoid", [30, 30, 30, 30])),
    }
    ratios = {}
    for key, experiment in runs.items():
        finished = stack.wait(experiment["id"], timeout=180)
        assert finished["status"] == "succeeded", finished
        layers = weight_layers(client.series(experiment["id"], "grad_mean_abs", step_max=0))
        assert len(layers) == key[1] + 1, [line["layer"] for line in layers]  # input → output
        first, last = layers[0], layers[-1]
        assert first["steps"] == last["steps"] == [0]
        ratios[key] = first["values"][0] / last["values"][0]
    print("first/last layer mean |dL/dW| at step 0:", ratios)
    assert ratios[("sigmoid", 2)] < 0.05, ratios
    assert ratios[("tanh", 2)] > 0.25, ratios
    assert ratios[("relu", 2)] > 0.25, ratios
    assert ratios[("sigmoid", 4)] < 0.005, ratios

    # The analysis says so in words, and draws it: sigmoid's picture is not ReLU's.
    verdicts = {key: client.summary(experiment["id"])["verdict"] for key, experiment in runs.items()}
    print("verdicts:", verdicts)
    assert verdicts[("sigmoid", 2)] == "vanishing", verdicts
    assert verdicts[("sigmoid", 4)] == "vanishing", verdicts
    assert verdicts[("relu", 2)] != "vanishing", verdicts
    pictures = {
        activation: client.plot(f"/experiments/{runs[(activation, 2)]['id']}/plot.png", metric="grad_mean_abs")
        for activation in ("sigmoid", "relu")
    }
    for picture in pictures.values():
        assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 5_000
    assert pictures["sigmoid"] != pictures["relu"]


def test_exploding_diverges_and_clipping_keeps_it_finite(stack: Stack) -> None:
    client = stack.client
    unclipped = client.submit(exploding_spec({"mode": "none"}))
    clipped = client.submit(exploding_spec({"mode": "norm", "threshold": 1.0}))

    diverged = stack.wait(unclipped["id"], timeout=180)
    assert diverged["status"] == "diverged", diverged
    assert diverged["result"]["diverged_at_step"] is not None
    assert diverged["result"]["diverged_at_step"] <= 20
    print("diverged at step", diverged["result"]["diverged_at_step"])
    (loss,) = client.series(unclipped["id"], "loss")["series"]
    # Everything measured up to the divergence is kept; the non-finite loss is JSON null.
    assert loss["steps"][-1] == diverged["result"]["diverged_at_step"]
    assert loss["values"][-1] is None

    finished = stack.wait(clipped["id"], timeout=300)
    assert finished["status"] == "succeeded", finished
    (loss,) = client.series(clipped["id"], "loss")["series"]
    assert loss["steps"] == list(range(300))
    assert all(value is not None and math.isfinite(value) for value in loss["values"])
    (after,) = client.series(clipped["id"], "grad_norm_total_clipped")["series"]
    (before,) = client.series(clipped["id"], "grad_norm_total")["series"]
    assert len(after["values"]) == 300
    assert max(after["values"]) <= 1.0 + 1e-6
    assert max(before["values"]) > 1.0, "pre-clip norms above the threshold are recorded"

    verdicts = {name: client.summary(run["id"])["verdict"] for name, run in (("none", unclipped), ("norm", clipped))}
    print("verdicts:", verdicts)
    assert verdicts["none"] == "exploding", verdicts
    assert verdicts["norm"] != "exploding", verdicts


def test_lstm_carries_the_gradient_through_time_where_the_rnn_loses_it(stack: Stack) -> None:
    client = stack.client
    runs = {model: client.submit(adding_spec(model)) for model in ("lstm", "rnn")}
    measured = {}
    for model, experiment in runs.items():
        finished = stack.wait(experiment["id"], timeout=360)
        assert finished["status"] == "succeeded", finished
        through_time = client.timesteps(experiment["id"])
        timesteps, rows = through_time["timesteps"], through_time["hidden_grad_norm"]
        assert timesteps[0] == 0 and timesteps[-1] == 49
        # After training: the median over the last ten records (each is one mini-batch,
        # and a trained tanh RNN's ratio swings by orders of magnitude between batches).
        late_ratios = sorted(row[0] / row[-1] for row in rows[-10:])
        measured[model] = {
            "test_mse": finished["result"]["test_loss"],
            "h1_over_hT": (late_ratios[4] + late_ratios[5]) / 2,
            "has_cell": through_time["cell_grad_norm"] is not None,
            "horizon": client.summary(experiment["id"])["horizon"],
        }
    print("adding T=50:", measured)
    assert measured["lstm"]["test_mse"] < 0.01, measured
    assert measured["rnn"]["test_mse"] > 0.1, measured
    assert measured["lstm"]["h1_over_hT"] > 1e-2, measured
    assert measured["rnn"]["h1_over_hT"] < 1e-4, measured
    assert measured["lstm"]["has_cell"] and not measured["rnn"]["has_cell"]
    assert final_horizon(measured["lstm"]["horizon"]) > final_horizon(measured["rnn"]["horizon"]), measured


def final_horizon(horizons: list[dict]) -> float:
    """The memory horizon after training of the (only) recurrent layer, from the summary."""
    (layer,) = horizons
    return layer["final"]


def test_a_sweep_over_activations_and_seeds_compares_aligned_labelled_series(stack: Stack) -> None:
    client = stack.client
    base = {
        "model": {"type": "mlp", "hidden_sizes": [30, 30], "init": {"scheme": "xavier_uniform"}},
        "dataset": {"name": "digits"},
        "training": {"optimizer": "sgd", "lr": 0.1, "batch_size": 64, "steps": 40},
    }
    grid = {"model.activation": ["sigmoid", "tanh", "relu"], "training.seed": [0, 1]}
    sweep = client.submit_sweep(base, grid, name="activations")
    assert len(sweep["members"]) == 6
    deadline = time.monotonic() + 240
    while client.sweep(sweep["id"])["status"] != "finished":
        assert time.monotonic() < deadline, client.sweep(sweep["id"])
        time.sleep(0.5)
    members = client.sweep(sweep["id"])["members"]
    assert {member["status"] for member in members} == {"succeeded"}, members

    compared = client.compare(sweep["id"], "grad_mean_abs", layer="layers.0.weight", max_points=100)
    assert len(compared["members"]) == 6
    steps = compared["steps"]
    assert steps[0] == 0 and steps[-1] == 39
    for member in compared["members"]:
        assert len(member["values"]) == len(steps), "aligned on step"
        assert set(member["params"]) == set(grid), member["params"]
    labels = {member["label"] for member in compared["members"]}
    assert len(labels) == 6
    groups = {group["label"]: group for group in compared["groups"]}
    assert len(groups) == 3, "aggregated over the seeds: one band per activation"
    for group in groups.values():
        assert sorted(group["seeds"]) == [0, 1]
        assert set(group["count"]) == {2}, "both seeds measured at every step"
        for low, mean, high in zip(group["minimum"], group["mean"], group["maximum"], strict=True):
            assert low <= mean <= high
