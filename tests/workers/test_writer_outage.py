"""The probe writer through a real database outage: PostgreSQL behind a TCP proxy that the
test cuts (every connection dropped, new ones refused) and restores. While cut, training
goes on until the buffer's bound, then waits; once restored the heartbeat lands before
the backlog and every step is stored once; past the tolerance the writer gives up with
the cause."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service import store
from service.db.base import utcnow
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from tests.workers.test_writer import make_batch, read, stored_points
from workers.outage import DatabaseUnreachable
from workers.writer import ProbeWriter, batch_nbytes


class Proxy:
    """127.0.0.1:<port> → the upstream server, until `cut()`; `restore()` listens again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(): it stops listening
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for end in self._sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._listener = self._listen(self.port)


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[Proxy, sessionmaker[Session], sessionmaker[Session]]]:
    """(proxy, sessions through it, sessions straight to the server)."""
    upgrade(postgres_url)
    url = make_url(postgres_url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    through = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    direct = make_engine(postgres_url)
    try:
        yield proxy, make_session_factory(through), make_session_factory(direct)
    finally:
        proxy.cut()
        through.dispose()
        direct.dispose()


def _running_experiment(sessions: sessionmaker[Session]) -> str:
    with sessions() as session:
        record = store.create_experiment(session, "outage", [], {"training": {"steps": 1000}}, "cpu")
        assert store.claim_experiment(session, record.id, "test worker") is not None
    return record.id


def test_an_outage_is_ridden_out_with_back_pressure_and_the_heartbeat_first(proxied) -> None:
    proxy, through, direct = proxied
    experiment_id = _running_experiment(direct)
    seen_heartbeats: list[tuple[datetime, datetime]] = []  # (heartbeat as committed, when)

    def write_chunks(session: Session, *args, **kwargs) -> None:
        # What the database holds when a batch is written: after the outage, the
        # heartbeat must already be there.
        with direct() as observer:
            seen_heartbeats.append((store.get_experiment(observer, experiment_id).heartbeat_at, utcnow()))
        store.write_chunks(session, *args, **kwargs)

    bound = 4 * batch_nbytes(make_batch(0, 10))
    writer = ProbeWriter(experiment_id, through, poll_s=0.05, max_buffer_bytes=bound, max_backoff_s=0.2,
                         retry_backoff_s=0.05, write_chunks=write_chunks).start()  # fmt: skip
    writer.on_flush(make_batch(0, 10))
    while writer.buffered_bytes:
        time.sleep(0.01)
    proxy.cut()
    for first in range(10, 50, 10):  # four batches fill the buffer while the database is away
        writer.on_flush(make_batch(first, 10))
    blocked = threading.Thread(target=writer.on_flush, args=(make_batch(50, 10),))
    blocked.start()
    blocked.join(1.0)
    assert blocked.is_alive(), "at the buffer's bound training must wait, not drop data"
    assert writer.buffered_bytes == bound
    restored_at = utcnow()
    proxy.restore()
    blocked.join(30)
    assert not blocked.is_alive()
    writer.close()

    after = [heartbeat for heartbeat, at in seen_heartbeats if at > restored_at]
    assert after and after[0] >= restored_at, "the heartbeat goes in before the backlog"
    np.testing.assert_array_equal(read(direct, experiment_id, "loss")[None], np.arange(60))
    assert stored_points(direct, experiment_id) == 4 * 60


def test_past_the_tolerance_the_writer_gives_up_with_the_cause(proxied) -> None:
    proxy, through, direct = proxied
    experiment_id = _running_experiment(direct)
    writer = ProbeWriter(experiment_id, through, poll_s=0.05, outage_tolerance_s=1.0, max_backoff_s=0.2).start()
    writer.on_flush(make_batch(0, 10))
    while writer.buffered_bytes:
        time.sleep(0.01)
    proxy.cut()
    writer.on_flush(make_batch(10, 10))
    while not writer.should_stop():  # training is told to stop once the tolerance is spent
        time.sleep(0.05)
    with pytest.raises(DatabaseUnreachable):
        writer.on_flush(make_batch(20, 10))  # the engine's next flush learns why
    proxy.restore()  # back within one more tolerance period: what was measured is kept
    with pytest.raises(DatabaseUnreachable, match=r"^database unreachable for \d+ s while .*GRADWATCH_DB_OUTAGE_TOLERANCE_S = 1 s"):
        writer.close()
    np.testing.assert_array_equal(read(direct, experiment_id, "loss")[None], np.arange(20))
    assert stored_points(direct, experiment_id) == 4 * 20
