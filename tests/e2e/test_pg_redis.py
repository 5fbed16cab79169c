"""End to end on the production pair, PostgreSQL + Redis, by HTTP alone: the engine
issue's three scenarios submitted to the API, trained by a real Celery worker process,
polled to completion, and their claims asserted from the JSON series; and a cancel.

One API and one worker (prefork, concurrency 1) serve the whole module; experiments
queue up behind each other exactly as they would in production.
"""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest
from matplotlib.image import imread

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
# Steps a cancelled run may take after the request: one flush of lag in the stored progress
# plus what the tiny digits MLP trains until the writer's next poll (every 0.1 s here);
# measured: 55 steps. README: it stops at the worker's next poll of the flag.
CANCEL_STEPS_BOUND = 2_000


# The README's claims table, which states these bands beside the numbers measured here
# (seed 0, one torch thread: 0.0167, 0.403, 0.330; LSTM 0.118, RNN 5.7e-13; horizon 49, 7).
# The trained tanh RNN's horizon is not a stable number: 7 here, 19 through the composed
# stack and in the reproductions' sweep (RNN trained first), with the same seed; the claim
# is that it stays far short of the LSTM's 49, so its band is the reproductions' 2–30.
SEED_BANDS = {"sigmoid": (0.015, 0.019), "relu": (0.36, 0.44), "tanh": (0.30, 0.36)}
LSTM_RATIO_BAND = (0.05, 0.2)
RNN_RATIO_BELOW = 1e-6
RNN_HORIZON_BAND = (2, 30)


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
    flagged = client.cancel(experiment["id"])
    assert flagged["status"] == "running" and flagged["cancel_requested"] is True
    stored_at_request = flagged["progress"]["step"]  # what the writer had stored by then
    finished = stack.wait(experiment["id"], timeout=120)
    assert finished["status"] == "cancelled", finished
    (loss,) = client.series(experiment["id"], "loss")["series"]
    steps = loss["steps"]
    assert steps == list(range(len(steps))), "every step up to the cancel is kept, in order"
    # Counted in steps, not seconds: the loop reads the flag every step, the writer polls it
    # every 0.1 s here; the stored progress lags training by at most a flush (50 steps).
    after_request = len(steps) - stored_at_request
    print(f"cancel: {after_request} steps after the request (progress stored then: {stored_at_request})")
    assert 0 <= after_request <= CANCEL_STEPS_BOUND, after_request
    assert finished["progress"]["step"] >= steps[-1]
    stored, distinct = stack.stored_points(experiment["id"])
    assert stored == distinct > 0


def test_seed_experiment_sigmoid_vanishes_where_tanh_and_relu_do_not(stack: Stack) -> None:
    client = stack.client
    # sigmoid and relu share a name, which is the pictures' title: they differ only by the curves.
    runs = {
        ("sigmoid", 2): client.submit(seed_spec("sigmoid", [30, 30]) | {"name": "seed-2x30"}),
        ("tanh", 2): client.submit(seed_spec("tanh", [30, 30])),
        ("relu", 2): client.submit(seed_spec("relu", [30, 30]) | {"name": "seed-2x30"}),
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
    # README's claims table: 0.017 for sigmoid, 0.40 for ReLU, 0.33 for tanh (each within
    # the band asserted here, which the README states).
    assert SEED_BANDS["sigmoid"][0] <= ratios[("sigmoid", 2)] <= SEED_BANDS["sigmoid"][1], ratios
    assert SEED_BANDS["relu"][0] <= ratios[("relu", 2)] <= SEED_BANDS["relu"][1], ratios
    assert SEED_BANDS["tanh"][0] <= ratios[("tanh", 2)] <= SEED_BANDS["tanh"][1], ratios
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
    images = {}
    for activation, picture in pictures.items():
        assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 5_000
        images[activation] = imread(io.BytesIO(picture), format="png")
    assert images["sigmoid"].shape == images["relu"].shape
    assert float(np.abs(images["sigmoid"] - images["relu"]).mean()) > 1e-3


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
        measured[model]["verdict"] = client.summary(experiment["id"])["verdict"]
    print("adding T=50:", measured)
    assert measured["lstm"]["test_mse"] < 0.01, measured
    assert measured["rnn"]["test_mse"] > 0.1, measured
    # README's claims table: about 0.1 for the LSTM, below 1e-6 for the tanh RNN, and a
    # horizon of 49 of 49 timesteps against 7 (the bands asserted here are the README's).
    assert LSTM_RATIO_BAND[0] <= measured["lstm"]["h1_over_hT"] <= LSTM_RATIO_BAND[1], measured
    assert measured["rnn"]["h1_over_hT"] < RNN_RATIO_BELOW, measured
    assert measured["lstm"]["has_cell"] and not measured["rnn"]["has_cell"]
    assert final_horizon(measured["lstm"]["horizon"]) == 49, measured
    assert RNN_HORIZON_BAND[0] <= final_horizon(measured["rnn"]["horizon"]) <= RNN_HORIZON_BAND[1], measured
    # The verdicts in words: the RNN's gradient vanishes through time, the LSTM's does not.
    assert measured["rnn"]["verdict"] == "vanishing", measured
    assert measured["lstm"]["verdict"] == "healthy", measured


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


def test_histograms_and_sharpness_through_a_real_worker(stack: Stack) -> None:
    """The instruments of the distributions and curvature issue, trained by the worker
    process and read back by HTTP: exact histogram counts, λ_max series, both pictures."""
    client = stack.client
    spec = seed_spec("sigmoid", [30, 30]) | {"name": "instruments"}
    spec["training"] |= {"steps": 6, "loss": "mse"}
    spec["logging"] = {"histogram_every": 2, "curvature_every": 3, "curvature_iterations": 10, "curvature_batch": 500}
    experiment = client.submit(spec)
    finished = stack.wait(experiment["id"], timeout=180)
    assert finished["status"] == "succeeded", finished
    gradients = client.histograms(experiment["id"])
    first = gradients["histograms"][0]
    assert first["layer"] == "layers.0.weight" and first["steps"] == [0, 2, 4]
    totals = np.asarray(first["counts"]).sum(axis=1) + sum(np.asarray(first[c]) for c in ("zero", "below", "above", "nonfinite"))
    assert (totals == 784 * 30).all()
    outputs = client.histograms(experiment["id"], "act_out", "layers.1")["histograms"][0]
    assert all(sum(row) + zero == 5000 * 30 for row, zero in zip(outputs["counts"], outputs["zero"]))
    sharpness = client.series(experiment["id"], "hessian_max_eig")["series"][0]
    assert sharpness["steps"] == [0, 3] and all(value > 0 for value in sharpness["values"])
    for path in ("histograms.png", "sharpness.png"):
        assert client.plot(f"/experiments/{experiment['id']}/{path}").startswith(b"\x89PNG\r\n\x1a\n")
