"""The enqueuer really sends `gradwatch.train` to Redis and to the embedded broker."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import kombu
import redis

from service.config import Settings
from service.queue import TRAIN_TASK, Enqueuer, broker_folders, celery_config


def test_celery_config_is_json_only_and_for_long_tasks(tmp_path: Path) -> None:
    config = celery_config(Settings(home=tmp_path, broker_url="redis://h:6379/0", visibility_timeout_s=999))
    assert config["broker_url"] == "redis://h:6379/0"
    assert config["task_serializer"] == "json" and config["accept_content"] == ["json"]
    assert config["task_acks_late"] is True and config["worker_prefetch_multiplier"] == 1
    assert config["broker_transport_options"] == {"visibility_timeout": 999}
    assert config["result_backend"] is None and config["task_default_queue"] == "cpu"
    embedded = celery_config(Settings(home=tmp_path))
    options = embedded["broker_transport_options"]
    assert embedded["broker_url"] == "filesystem://"
    # Producer and consumer share the config: they must write and read the same folder.
    assert options["data_folder_in"] == options["data_folder_out"]
    assert Path(options["data_folder_in"]).is_relative_to(tmp_path)


def test_enqueue_lands_in_the_redis_queue(tmp_path: Path, redis_url: str) -> None:
    enqueuer = Enqueuer(Settings(home=tmp_path, broker_url=redis_url))
    try:
        enqueuer.enqueue("abc123", "cpu")
        enqueuer.enqueue("def456", "gpu")
    finally:
        enqueuer.close()
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen("cpu") == 1 and client.llen("gpu") == 1
        message = json.loads(client.lindex("cpu", 0))
    finally:
        client.close()
    assert message["headers"]["task"] == TRAIN_TASK
    assert message["content-type"] == "application/json"
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == ["abc123"]


def test_enqueue_lands_in_the_filesystem_queue(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    enqueuer = Enqueuer(settings)
    try:
        enqueuer.enqueue("abc123", "gpu")
    finally:
        enqueuer.close()
    files = list(broker_folders(settings)["queue"].iterdir())
    assert [f.name.endswith(".gpu.msg") for f in files] == [True]

    # A consumer with the same configuration receives it.
    config = celery_config(settings)
    received = []
    with kombu.Connection("filesystem://", transport_options=config["broker_transport_options"]) as conn:
        queue = kombu.Queue("gpu", routing_key="gpu")
        with conn.Consumer(queue, accept=["json"], callbacks=[lambda body, msg: (received.append((msg.headers, body)), msg.ack())]):
            conn.drain_events(timeout=5)
    headers, body = received[0]
    assert headers["task"] == TRAIN_TASK and body[0] == ["abc123"]


def test_waiting_ids_reads_the_messages_back_from_both_brokers(tmp_path: Path, redis_url: str) -> None:
    for settings in (Settings(home=tmp_path / "fs"), Settings(home=tmp_path / "redis", broker_url=redis_url)):
        enqueuer = Enqueuer(settings)
        try:
            assert enqueuer.waiting_ids("cpu") == set()
            enqueuer.enqueue("abc123", "cpu")
            enqueuer.enqueue("def456", "cpu")
            enqueuer.enqueue("0123ff", "gpu")
            enqueuer.celery.send_task("some.other.task", args=["not-an-experiment"], queue="cpu")
            assert enqueuer.waiting_ids("cpu") == {"abc123", "def456"}
            assert enqueuer.waiting_ids("gpu") == {"0123ff"}
        finally:
            enqueuer.close()


def test_task_experiment_id_refuses_what_is_not_a_train_message() -> None:
    from service.queue import task_experiment_id

    assert task_experiment_id(b"not json") is None
    assert task_experiment_id(b'{"headers": {"task": "gradwatch.train"}}') is None
    body = base64.b64encode(json.dumps([["e1"], {}, {}]).encode()).decode()
    message = {"headers": {"task": TRAIN_TASK}, "body": body, "properties": {"body_encoding": "base64"}}
    assert task_experiment_id(json.dumps(message)) == "e1"
    assert task_experiment_id(json.dumps({**message, "headers": {"task": "x"}})) is None
