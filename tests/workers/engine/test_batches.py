"""The batch stream: every epoch a permutation of the training set, and labels handed out in
one epoch unchanged by the next (the recorder keeps them until its flush), while the inputs
reuse one buffer across epochs."""

from __future__ import annotations

import torch

from workers.engine.batches import BatchStream
from workers.engine.datasets.base import TaskData


def test_epochs_are_permutations_and_earlier_labels_stay_intact() -> None:
    count, batch = 12, 4
    x = torch.arange(count, dtype=torch.float32).view(count, 1, 1).expand(count, 3, 2).contiguous()
    y = torch.arange(count)
    data = TaskData(x, y, x[:2], y[:2], "classification", count, False)
    stream = BatchStream(data, batch, seed=7)
    kept_labels, epochs = [], []
    for _epoch in range(3):
        seen = []
        for _ in range(count // batch):
            xb, yb = next(stream)
            assert torch.equal(xb[:, 0, 0], yb.float()), "an input row and its label come from the same example"
            kept_labels.append((yb, yb.clone()))
            seen.append(yb.clone())
        order = torch.cat(seen)
        assert sorted(order.tolist()) == list(range(count))
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1]), "each epoch is shuffled anew"
    for handed_out, copy in kept_labels:
        assert torch.equal(handed_out, copy), "a later epoch overwrote labels handed out before it"
