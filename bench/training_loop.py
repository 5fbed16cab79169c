"""The engine against a conventional PyTorch training loop: steps per second.

    python -m bench.training_loop [--steps 2000] [--repeats 3] [--hidden 30 30] [--threads 1]

Both arms train the same network (an MLP 784-H-H-10, sigmoid, PyTorch's default
initialisation) on the same data (MNIST from `<data_dir>/mnist/`, the test split's 9,000
training images, as the engine loads it) for the same number of SGD steps of batch 64:

- **conventional**: the loop of the PyTorch MNIST example (pytorch/examples, mnist/main.py):
  `DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)`, `zero_grad`, forward,
  cross-entropy, `backward`, `step`, and `loss.item()` every `log_interval` = 10 batches
  (the example's logging), then a test pass;
- **engine**: `workers.engine.train` as a worker runs it: every probe on, every step
  recorded (`log_every=1`), batches handed to a no-op `on_flush`, then its test pass;
- **engine, no probes** (for information): the same with the probes off, the engine's
  bare loop.

Each arm's time is the whole call: loading the data, building the model, the steps and the
evaluation, so neither hides a cost. Arms run interleaved, `--repeats` times each; the ratio
is of medians. `--threads` (default 1) sets torch's intra-op threads in every arm, so a
shared machine's noise hits the arms alike.

Data: GRADWATCH_DATA_DIR, else ../shared/data, else ~/.gradwatch/data (with mnist/ inside).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from bench.common import REPO_ROOT, header, ratio_line
from workers.engine import DatasetConfig, ModelConfig, ProbeConfig, RunConfig, TrainingConfig, train
from workers.engine.datasets import load_dataset

BATCH_SIZE = 64
LR = 0.5  # the seed's sigmoid network needs a large step to learn in a few thousand steps
LOG_INTERVAL = 10  # the MNIST example's --log-interval


def data_dir() -> str:
    configured = os.environ.get("GRADWATCH_DATA_DIR")
    if configured:
        return configured
    for candidate in (REPO_ROOT.parent / "shared" / "data", Path.home() / ".gradwatch" / "data"):
        if (candidate / "mnist").is_dir():
            return str(candidate)
    raise SystemExit("no MNIST files found: set GRADWATCH_DATA_DIR to the folder that holds mnist/")


def dataset_config(directory: str) -> DatasetConfig:
    return DatasetConfig(name="mnist", split="test", data_dir=directory)


def conventional(steps: int, hidden: tuple[int, ...], directory: str, seed: int = 0) -> float:
    """The PyTorch MNIST example's loop, on the same tensors; returns seconds."""
    started = time.perf_counter()
    data = load_dataset(dataset_config(directory))
    torch.manual_seed(seed)
    widths = (28 * 28, *hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths, widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(data.train_x, data.train_y), batch_size=BATCH_SIZE, shuffle=True)
    model.train()
    done, losses = 0, []
    while done < steps:  # epochs, as the example's `for epoch in range(...)`
        for batch_idx, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            output = model(x)
            loss = F.cross_entropy(output, y)
            loss.backward()
            optimizer.step()
            if batch_idx % LOG_INTERVAL == 0:
                losses.append(loss.item())  # sync, as the example's print
            done += 1
            if done == steps:
                break
    model.eval()
    with torch.no_grad():  # the example's test(): loss and accuracy on the held-out split
        output = model(data.test_x)
        _ = F.cross_entropy(output, data.test_y).item(), (output.argmax(1) == data.test_y).float().mean().item()
    return time.perf_counter() - started


def engine(steps: int, hidden: tuple[int, ...], directory: str, probes: bool, seed: int = 0) -> float:
    """`workers.engine.train` with every probe on (or off); returns seconds."""
    config = RunConfig(
        model=ModelConfig(kind="mlp", hidden_sizes=hidden, activation="sigmoid"),
        dataset=dataset_config(directory),
        training=TrainingConfig(steps=steps, batch_size=BATCH_SIZE, optimizer="sgd", lr=LR),
        probes=ProbeConfig(log_every=1 if probes else steps + 1, parameters=probes, layers=probes, timesteps=probes),
        seed=seed,
        device="cpu",
    )
    points = 0

    def on_flush(batch: object) -> None:  # the worker's writer would queue it; here it is dropped
        nonlocal points
        points += len(batch.steps) * len(batch.values)  # type: ignore[attr-defined]

    started = time.perf_counter()
    result = train(config, on_flush)
    elapsed = time.perf_counter() - started
    if result.status != "succeeded" or result.steps_done != steps:
        raise SystemExit(f"the engine did not finish: {result}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[30, 30])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every arm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = tuple(args.hidden)
    directory = data_dir()

    header("training loop: gradwatch engine vs the PyTorch MNIST example's loop")
    print(f"   MLP 784-{'-'.join(map(str, hidden))}-10 sigmoid, SGD lr {LR}, batch {BATCH_SIZE}, {args.steps:,} steps, "
          f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), MNIST from {directory}")  # fmt: skip
    arms = {
        "conventional (DataLoader)": lambda: conventional(args.steps, hidden, directory),
        "engine, all probes": lambda: engine(args.steps, hidden, directory, probes=True),
        "engine, no probes": lambda: engine(args.steps, hidden, directory, probes=False),
    }
    for run in arms.values():  # warm-up: imports, the dataset's page cache, torch's kernels
        run()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(args.repeats):
        for name, run in arms.items():
            times[name].append(run())
        print(f"   round {repeat + 1}: " + ", ".join(f"{n} {args.steps / times[n][-1]:,.0f} steps/s" for n in arms))
    rates = {name: args.steps / statistics.median(values) for name, values in times.items()}
    for name, rate in rates.items():
        spread = ", ".join(f"{args.steps / t:,.0f}" for t in times[name])
        print(f"   {name:<28} {rate:9,.0f} steps/s (median of {args.repeats}: {spread})")
    base = rates["conventional (DataLoader)"]
    print(f"   engine, no probes / conventional = {rates['engine, no probes'] / base:.2f}x (for information)")
    print(ratio_line("training_loop engine(all probes)/conventional steps/s", rates["engine, all probes"] / base, 1.0))


if __name__ == "__main__":
    main()
