"""Every dataset: shapes, seeded determinism, stratification and the errors a user can act on."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.engine.config import DatasetConfig
from workers.engine.datasets import DatasetUnavailable, load_dataset
from workers.engine.datasets.base import stratified_counts
from workers.engine.datasets.synthetic import adding_sequences, copy_sequences, temporal_order_sequences


def same(a, b) -> None:  # noqa: ANN001
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_mnist_test_split_holds_out_a_stratified_thousand(mnist_data_dir: Path) -> None:
    data = load_dataset(DatasetConfig(name="mnist", split="test", data_dir=str(mnist_data_dir)))
    assert data.train_x.shape == (9_000, 28, 28) and data.test_x.shape == (1_000, 28, 28)
    assert data.train_x.dtype == torch.float32 and 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0
    counts = np.bincount(data.test_y.numpy(), minlength=10)
    # class counts 980 1135 1032 1010 982 892 958 1028 974 1009 → a tenth of each, largest remainders rounded up
    assert list(counts) == [98, 114, 103, 101, 98, 89, 96, 103, 97, 101]
    assert data.task == "classification" and data.num_outputs == 10 and not data.many_to_many


def test_mnist_limit_is_stratified(mnist_data_dir: Path) -> None:
    data = load_dataset(DatasetConfig(name="mnist", split="test", data_dir=str(mnist_data_dir), limit=5_000))
    assert data.train_x.shape[0] == 5_000
    counts = np.bincount(data.train_y.numpy(), minlength=10)
    assert abs(counts - np.array([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]) / 2).max() <= 1
    same(data, load_dataset(DatasetConfig(name="mnist", split="test", data_dir=str(mnist_data_dir), limit=5_000)))


def test_mnist_reads_uncompressed_files(mnist_data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_data_dir / "mnist" / f"{stem}.gz", "rb") as source, open(tmp_path / "mnist" / stem, "wb") as out:
            shutil.copyfileobj(source, out)
    same(
        load_dataset(DatasetConfig(name="mnist", split="test", data_dir=str(tmp_path), limit=100)),
        load_dataset(DatasetConfig(name="mnist", split="test", data_dir=str(mnist_data_dir), limit=100)),
    )


def test_the_default_split_trains_on_the_test_files_when_only_they_are_there(
    mnist_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="gradwatch.engine"):
        data = load_dataset(DatasetConfig(name="mnist", data_dir=str(mnist_data_dir), limit=500))
    assert DatasetConfig(name="mnist").split == "auto"
    same(data, load_dataset(DatasetConfig(name="mnist", split="test", data_dir=str(mnist_data_dir), limit=500)))
    assert "training on split 'test'" in caplog.text and str(mnist_data_dir / "mnist") in caplog.text


def test_missing_mnist_train_files_name_the_files_the_folder_and_the_fix(mnist_data_dir: Path) -> None:
    with pytest.raises(DatasetUnavailable) as error:
        load_dataset(DatasetConfig(name="mnist", split="train", data_dir=str(mnist_data_dir)))
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert str(mnist_data_dir / "mnist") in message
    assert "GRADWATCH_DATA_DIR" in message and "GRADWATCH_ALLOW_DOWNLOAD=true" in message
    assert isinstance(error.value, FileNotFoundError)


def test_no_data_dir_is_a_clear_error() -> None:
    with pytest.raises(DatasetUnavailable, match="GRADWATCH_DATA_DIR"):
        load_dataset(DatasetConfig(name="mnist", split="test", data_dir=None))


def test_a_corrupt_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    with pytest.raises(DatasetUnavailable, match="magic"):
        load_dataset(DatasetConfig(name="mnist", split="test", data_dir=str(tmp_path)))


@pytest.mark.parametrize(("order", "shape"), [("rows", (28, 28)), ("pixels", (784, 1))])
def test_sequential_mnist(mnist_data_dir: Path, order: str, shape: tuple[int, int]) -> None:
    config = DatasetConfig(name="sequential_mnist", split="test", data_dir=str(mnist_data_dir), limit=200, pixel_order=order)
    plain = load_dataset(config)
    assert plain.train_x.shape == (200, *shape)
    config.permuted = True
    permuted = load_dataset(config)
    assert not torch.equal(plain.train_x, permuted.train_x)
    # the same pixels, in another (fixed) order
    assert torch.equal(plain.train_x.sort(dim=1).values, permuted.train_x.sort(dim=1).values)
    same(permuted, load_dataset(config))


def test_digits() -> None:
    data = load_dataset(DatasetConfig(name="digits"))
    assert data.train_x.shape == (1_437, 8, 8) and data.test_x.shape == (360, 8, 8)
    assert float(data.train_x.max()) == 1.0
    assert np.bincount(data.test_y.numpy()).min() >= 35
    same(data, load_dataset(DatasetConfig(name="digits")))
    assert load_dataset(DatasetConfig(name="digits", limit=100)).train_x.shape[0] == 100


def test_mnist1d() -> None:
    state = np.random.get_state()
    data = load_dataset(DatasetConfig(name="mnist1d"))
    assert data.train_x.shape == (4_000, 40, 1) and data.test_x.shape == (1_000, 40, 1)
    assert set(np.unique(data.train_y.numpy())) == set(range(10))
    same(data, load_dataset(DatasetConfig(name="mnist1d")))
    assert np.array_equal(np.random.get_state()[1], state[1])  # global numpy RNG untouched


def test_adding_shapes_markers_and_constant_predictor() -> None:
    x, y = adding_sequences(20_000, 50, np.random.default_rng(0))
    assert x.shape == (20_000, 50, 2) and y.shape == (20_000,)
    markers = x[:, :, 1]
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :25].sum(1) == 1).all() and (markers[:, 25:].sum(1) == 1).all()
    np.testing.assert_allclose(y, (x[:, :, 0] * markers).sum(1), rtol=1e-6)
    # the best constant (the mean, ≈ 1) scores Var(u₁ + u₂) = 2/12
    assert abs(float(((y - y.mean()) ** 2).mean()) - 1 / 6) < 0.01
    assert abs(float(((y - 1.0) ** 2).mean()) - 1 / 6) < 0.01


def test_copy_task() -> None:
    x, y = copy_sequences(100, 30, np.random.default_rng(0))
    assert x.shape == (100, 50, 10) and y.shape == (100, 50)
    tokens = x.argmax(2)
    assert (tokens[:, 39] == 9).all()  # the delimiter after the delay
    np.testing.assert_array_equal(y[:, -10:], tokens[:, :10])
    assert (y[:, :-10] == 0).all() and ((tokens[:, :10] >= 1) & (tokens[:, :10] <= 8)).all()


def test_temporal_order() -> None:
    x, y = temporal_order_sequences(1_000, 100, np.random.default_rng(0))
    assert x.shape == (1_000, 100, 6) and y.shape == (1_000,)
    tokens = x.argmax(2)
    relevant = tokens >= 4
    assert (relevant.sum(1) == 2).all()
    assert relevant[:, 10:20].sum(1).min() == 1 and relevant[:, 50:60].sum(1).min() == 1
    first, second = tokens[:, 10:20].max(1) - 4, tokens[:, 50:60].max(1) - 4
    np.testing.assert_array_equal(y, 2 * first + second)
    assert set(np.unique(y)) == {0, 1, 2, 3}


@pytest.mark.parametrize(("name", "x_shape", "y_shape"), [
    ("adding", (64, 20, 2), (64,)),
    ("copy", (64, 40, 10), (64, 40)),
    ("temporal_order", (64, 20, 6), (64,)),
])
def test_generated_tasks_are_seeded(name: str, x_shape: tuple, y_shape: tuple) -> None:
    config = DatasetConfig(name=name, seq_len=20, num_train=64, num_test=16, seed=3)
    data = load_dataset(config)
    assert tuple(data.train_x.shape) == x_shape and tuple(data.train_y.shape) == y_shape
    assert data.test_x.shape[0] == 16
    same(data, load_dataset(config))
    assert not torch.equal(data.train_x, load_dataset(DatasetConfig(name=name, seq_len=20, num_train=64, num_test=16, seed=4)).train_x)
    assert not torch.equal(data.train_x[:16], data.test_x)  # held-out sequences are new ones


def test_stratified_counts_sum_to_the_total() -> None:
    counts = stratified_counts(np.array([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]), 5_000)
    assert counts.sum() == 5_000


def test_digits_read_from_the_shipped_file_equal_scikit_learns_loader() -> None:
    """The worker reads scikit-learn's CSV itself (importing scikit-learn costs a fresh
    worker seconds); what it reads must be exactly what `load_digits` returns."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from workers.engine.datasets import digits

    table = np.loadtxt(digits.digits_file(), delimiter=",")
    reference = load_digits()
    assert np.array_equal(table[:, :-1].reshape(-1, 8, 8), reference.images)
    assert np.array_equal(table[:, -1].astype(np.int64), reference.target)
    # And loading the dataset imports neither scikit-learn nor SciPy.
    probe = "import sys; from workers.engine.datasets import digits; digits.load(None, None); print('sklearn' in sys.modules, 'scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split() == ["False", "False"]
