"""Fetching missing MNIST files: from a real HTTP server on 127.0.0.1 started by the test,
which serves the real gzipped test set from the shared data folder, a truncated copy, a
well-formed gzip with the wrong content, a 404, and a mirror that accepts the connection
and never answers. Nothing leaves the machine."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.config import Settings
from workers.engine.datasets import DatasetUnavailable, mnist
from workers.spec import to_run_config

STEMS = mnist.FILES["test"]


class Mirror:
    """A threaded HTTP server: /good/, /truncated/, /wrong/, /silent/ and anything else (404)."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.release = threading.Event()  # lets /silent/ requests end at teardown
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                mirror.requests.append(self.path)
                kind, _, name = self.path.strip("/").partition("/")
                payload = mirror.payload(kind, name)
                if kind == "silent":
                    mirror.release.wait(30)
                    return
                if payload is None:
                    self.send_error(404, "no such file")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def payload(self, kind: str, name: str) -> bytes | None:
        path = self.source / name
        if not name.endswith(".gz") or not path.is_file():
            return None
        content = path.read_bytes()
        if kind == "good":
            return content
        if kind == "truncated":
            return content[: len(content) // 2]
        if kind == "wrong":
            return gzip.compress(b"\x00\x00\x08\x03" + bytes(1000))  # an IDX header, then nothing right
        return None

    def __enter__(self) -> Mirror:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(mnist_data_dir: Path) -> Iterator[Mirror]:
    with Mirror(mnist_data_dir / "mnist") as server:
        yield server


def test_missing_files_are_fetched_checked_and_kept(mirror: Mirror, mnist_data_dir: Path, tmp_path: Path) -> None:
    images, labels = mnist.load_split("test", str(tmp_path), download=True, timeout=30, mirrors=(f"{mirror.url}/good",))
    assert mirror.requests == [f"/good/{stem}.gz" for stem in STEMS]
    for stem in STEMS:
        assert (tmp_path / "mnist" / f"{stem}.gz").read_bytes() == (mnist_data_dir / "mnist" / f"{stem}.gz").read_bytes()
    expected_images, expected_labels = mnist.load_split("test", str(mnist_data_dir))
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    # Present now: a second load reads the folder and asks no mirror.
    mnist.load_split("test", str(tmp_path), download=True, timeout=30, mirrors=(f"{mirror.url}/good",))
    assert len(mirror.requests) == len(STEMS)


def test_a_bad_mirror_is_skipped_for_the_next_one(mirror: Mirror, tmp_path: Path) -> None:
    mirrors = (f"{mirror.url}/truncated", f"{mirror.url}/wrong", f"{mirror.url}/missing", f"{mirror.url}/good")
    images, _ = mnist.load_split("test", str(tmp_path), download=True, timeout=30, mirrors=mirrors)
    assert images.shape == (10_000, 28, 28)
    assert [path.split("/")[1] for path in mirror.requests] == ["truncated", "wrong", "missing", "good"] * 2


def test_content_that_fails_the_check_is_refused_and_not_kept(mirror: Mirror, tmp_path: Path) -> None:
    mirrors = (f"{mirror.url}/truncated", f"{mirror.url}/wrong", f"{mirror.url}/missing")
    with pytest.raises(DatasetUnavailable) as refused:
        mnist.load_split("test", str(tmp_path), download=True, timeout=30, mirrors=mirrors)
    message = str(refused.value)
    assert message.startswith(f"could not download {STEMS[0]}.gz: ")
    truncated, wrong, missing = message.split(": ", 1)[1].split("; ")
    assert truncated.startswith(f"{mirror.url}/truncated/{STEMS[0]}.gz: content check failed (MD5 ")
    assert wrong.startswith(f"{mirror.url}/wrong/{STEMS[0]}.gz: content check failed (MD5 ")
    assert missing.startswith(f"{mirror.url}/missing/{STEMS[0]}.gz: HTTP Error 404")
    # Offline, the user learns where the files go and which setting names the folder.
    assert f"copy the MNIST IDX files into {tmp_path / 'mnist'}" in message and "GRADWATCH_DATA_DIR" in message
    assert list((tmp_path / "mnist").iterdir()) == [], "nothing unchecked is left behind"


def test_a_mirror_that_never_answers_times_out(mirror: Mirror, tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match=rf"{mirror.url}/silent/{STEMS[0]}\.gz: .*timed out"):
        mnist.load_split("test", str(tmp_path), download=True, timeout=0.5, mirrors=(f"{mirror.url}/silent",))
    assert list((tmp_path / "mnist").iterdir()) == []


def test_the_service_settings_choose_the_mirror_and_the_timeout(mirror: Mirror, tmp_path: Path) -> None:
    from service.schemas.spec import ExperimentSpec
    from workers.engine.datasets import load_dataset

    spec = ExperimentSpec.model_validate({"model": {"type": "mlp"}, "dataset": {"name": "mnist", "split": "test"}})
    settings = Settings(data_dir=tmp_path, allow_download=True, mnist_mirror_url=f"{mirror.url}/good/", download_timeout_s=7.5)
    dataset = to_run_config(spec.model_dump(mode="json"), settings).dataset
    assert dataset.download and dataset.download_timeout_s == 7.5
    assert dataset.download_mirrors == (f"{mirror.url}/good/",)
    data = load_dataset(dataset)
    assert data.train_x.shape == (dataset.limit, 28, 28) and data.test_x.shape == (1_000, 28, 28)
    assert mirror.requests == [f"/good/{stem}.gz" for stem in STEMS]
    # Unset, the engine uses the public mirrors.
    assert to_run_config(spec.model_dump(mode="json"), Settings(data_dir=tmp_path)).dataset.download_mirrors == ()
