"""MNIST from the standard IDX files in `<data_dir>/mnist/`, gzipped or not.

Split "train" trains on the 60,000 training images and evaluates on the 10,000 test images.
Split "test" uses only the test files (all that ships with gradwatch): the last `test_size`
images of each class, stratified (1,000 by default), are held out for evaluation and the
other 9,000 are the training set. Split "auto" (the spec's default) is "train" when both
training files are on disk (or may be downloaded), else "test", with a warning in the
worker's log: a first run on a machine that holds only the test set, as gradwatch ships
it, trains rather than fails. Pixels are scaled to [0, 1], as in the seed's notebook.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .base import DatasetUnavailable, TaskData, classification, limit_classification, split_classification

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
COUNTS = {"train": 60_000, "test": 10_000}
log = logging.getLogger("gradwatch.engine")
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# A downloaded file is accepted when the MD5 of the published .gz or of its decompressed
# content matches (the copy in shared/data was recompressed: only its content matches).
KNOWN_MD5 = {
    "train-images-idx3-ubyte": {"f68b3c2dcbeaaa9fbdd348bbdeb94873"},
    "train-labels-idx1-ubyte": {"d53e105ee54ea40749a09fcbcd1e9432"},
    "t10k-images-idx3-ubyte": {"9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"},
    "t10k-labels-idx1-ubyte": {"ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"},
}
DEFAULT_TEST_SIZE = 1_000


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as handle:
        return handle.read()


def parse_idx(content: bytes, expected_magic: int, source: Path) -> np.ndarray:
    """An IDX array (big-endian header: magic, then one uint32 per dimension, then uint8 data)."""
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:
        raise DatasetUnavailable(f"{source} is not an MNIST IDX file: magic {magic}, expected {expected_magic}")
    dims = expected_magic & 0xFF
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise DatasetUnavailable(f"{source} is truncated: {data.size} bytes of data for shape {shape}")
    return data.reshape(shape)


def _download(folder: Path, stem: str, timeout: float, mirrors: tuple[str, ...] = MIRRORS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + stem + ".gz"
        try:
            # The public mirrors, or the operator's (GRADWATCH_MNIST_MIRROR_URL): never user input.
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                payload = response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            errors.append(f"{url}: {error}")
            continue
        digests = {hashlib.md5(payload).hexdigest()}  # noqa: S324 (a checksum, not security)
        try:
            digests.add(hashlib.md5(gzip.decompress(payload)).hexdigest())  # noqa: S324
        except (OSError, EOFError, zlib.error):
            pass  # not gzip, or cut short (EOFError): only the payload's own MD5 can match
        if not digests & KNOWN_MD5[stem]:
            errors.append(f"{url}: content check failed (MD5 {sorted(digests)})")
            continue
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{stem}.")
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
        os.replace(temporary, folder / (stem + ".gz"))
        return
    raise DatasetUnavailable(
        f"could not download {stem}.gz: " + "; ".join(errors) + f". Offline, copy the MNIST IDX files into "
        f"{folder} yourself (gzipped or not), or point GRADWATCH_DATA_DIR at a folder whose mnist/ holds them"
    )


def _folder(data_dir: str | None) -> Path:
    if not data_dir:
        raise DatasetUnavailable(
            "MNIST needs a data folder, and none is configured: set GRADWATCH_DATA_DIR to the folder "
            "that holds mnist/ (with the IDX files from http://yann.lecun.com/exdb/mnist/)"
        )
    return Path(data_dir) / "mnist"


def load_split(
    split: str, data_dir: str | None, download: bool = False, timeout: float = 60.0, mirrors: tuple[str, ...] = MIRRORS
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one split; missing files are fetched
    from the first of `mirrors` that serves them with the right content, when `download`."""
    folder = _folder(data_dir)
    stems = FILES[split]
    missing = [stem for stem in stems if _find(folder, stem) is None]
    if missing and download:
        for stem in missing:
            _download(folder, stem, timeout, mirrors)
        missing = []
    if missing:
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise DatasetUnavailable(
            f"MNIST split {split!r} needs {' and '.join(s + '[.gz]' for s in missing)} in {folder}, "
            f"which {'holds ' + ', '.join(present) if present else 'is empty or does not exist'}. "
            "Copy the IDX files there (gzipped or not), point GRADWATCH_DATA_DIR at the folder that "
            "holds mnist/, or allow downloading (GRADWATCH_ALLOW_DOWNLOAD=true; in the engine, DatasetConfig download=True)"
            + (", or train on split 'test'" if split == "train" and _find(folder, FILES["test"][0]) else "")
            + "."
        )
    image_path, label_path = (_find(folder, stem) for stem in stems)
    assert image_path is not None and label_path is not None
    images = parse_idx(_read_bytes(image_path), 2051, image_path)
    labels = parse_idx(_read_bytes(label_path), 2049, label_path).astype(np.int64)
    if len(images) != len(labels) or len(images) != COUNTS[split] or images.shape[1:] != (28, 28):
        raise DatasetUnavailable(
            f"{image_path} and {label_path} hold {len(images)} images {images.shape[1:]} and {len(labels)} labels; "
            f"expected {COUNTS[split]} of 28×28"
        )
    return images, labels


def resolve_split(split: str, data_dir: str | None, download: bool) -> str:
    """"auto" → "train" when its files are there (or may be fetched), else "test"."""
    if split != "auto":
        return split
    folder = _folder(data_dir)
    if download or all(_find(folder, stem) is not None for stem in FILES["train"]):
        return "train"
    log.warning(
        "dataset.split auto: no MNIST training files in %s, training on split 'test' (9,000 of its images; "
        "1,000 held out); put train-*-ubyte there, or set split 'train' to make their absence an error",
        folder,
    )
    return "test"


def load_images(
    split: str, data_dir: str | None, download: bool, timeout: float, limit: int | None, test_size: int | None,
    mirrors: tuple[str, ...] = MIRRORS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels), images float32 in [0, 1], (N, 28, 28)."""
    split = resolve_split(split, data_dir, download)
    if split == "train":
        train_x, train_y = load_split("train", data_dir, download, timeout, mirrors)
        test_x, test_y = load_split("test", data_dir, download, timeout, mirrors)
        train_x, train_y = limit_classification(train_x, train_y, limit)
    else:
        x, y = load_split("test", data_dir, download, timeout, mirrors)
        train_x, train_y, test_x, test_y = split_classification(x, y, test_size or DEFAULT_TEST_SIZE, limit)
    scale = np.float32(1.0 / 255.0)
    return train_x.astype(np.float32) * scale, train_y, test_x.astype(np.float32) * scale, test_y


def load(
    split: str, data_dir: str | None, download: bool, timeout: float, limit: int | None, test_size: int | None,
    mirrors: tuple[str, ...] = MIRRORS,
) -> TaskData:
    """Each image is 28 rows of 28 pixels, (N, 28, 28); an MLP sees all 784 pixels."""
    return classification(*load_images(split, data_dir, download, timeout, limit, test_size, mirrors), num_classes=10)
