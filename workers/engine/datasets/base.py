"""What every dataset loader returns, and the stratified subsets they share."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


class DatasetUnavailable(FileNotFoundError):
    """A dataset's files are missing (or wrong) and cannot be fetched; the message says what to do."""


@dataclass(frozen=True)
class TaskData:
    """A dataset as tensors, examples first. Inputs are sequences (N, T, D): an MLP flattens them."""

    train_x: torch.Tensor  # (N, T, D) float32
    train_y: torch.Tensor  # (N,) int64 classes, (N,) float32 targets, or (N, T) int64 per step
    test_x: torch.Tensor  # (M, T, D): held out, only evaluated after training
    test_y: torch.Tensor
    task: str  # "classification" (cross-entropy) | "regression" (MSE)
    num_outputs: int  # classes, or regression targets (1)
    many_to_many: bool  # a target at every timestep (copy) rather than one per sequence

    def to(self, device: torch.device) -> TaskData:
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )


def stratified_counts(class_counts: np.ndarray, total: int) -> np.ndarray:
    """How many of each class a subset of `total` keeps, proportional (largest remainder)."""
    total = min(total, int(class_counts.sum()))
    exact = class_counts * total / class_counts.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def stratified_first(labels: np.ndarray, total: int) -> np.ndarray:
    """Indices of a stratified subset of `total`: the first examples of each class, in file order."""
    classes, class_counts = np.unique(labels, return_counts=True)
    keep = stratified_counts(class_counts, total)
    chosen = [np.flatnonzero(labels == c)[:k] for c, k in zip(classes, keep)]
    return np.sort(np.concatenate(chosen))


def stratified_last(labels: np.ndarray, total: int) -> np.ndarray:
    """Indices of a stratified subset of `total`: the last examples of each class, in file order."""
    classes, class_counts = np.unique(labels, return_counts=True)
    keep = stratified_counts(class_counts, total)
    chosen = [np.flatnonzero(labels == c)[len(np.flatnonzero(labels == c)) - k :] for c, k in zip(classes, keep)]
    return np.sort(np.concatenate(chosen))


def split_classification(
    x: np.ndarray, y: np.ndarray, test_size: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out the last `test_size` (stratified), then keep a stratified `limit` of the rest."""
    held_out = stratified_last(y, test_size)
    rest = np.setdiff1d(np.arange(len(y)), held_out)
    train_x, train_y = x[rest], y[rest]
    if limit is not None:
        kept = stratified_first(train_y, limit)
        train_x, train_y = train_x[kept], train_y[kept]
    return train_x, train_y, x[held_out], y[held_out]


def limit_classification(x: np.ndarray, y: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    if limit is None:
        return x, y
    kept = stratified_first(y, limit)
    return x[kept], y[kept]


def classification(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, num_classes: int
) -> TaskData:
    return TaskData(
        train_x=torch.as_tensor(np.ascontiguousarray(train_x), dtype=torch.float32),
        train_y=torch.as_tensor(train_y, dtype=torch.int64),
        test_x=torch.as_tensor(np.ascontiguousarray(test_x), dtype=torch.float32),
        test_y=torch.as_tensor(test_y, dtype=torch.int64),
        task="classification",
        num_outputs=num_classes,
        many_to_many=False,
    )
