"""A real HTTP server on 127.0.0.1 that receives gradwatch callbacks, as a pipeline's
would: it records every request (headers and raw body) and answers 500 to the first
`fail_first` attempts of each event, then 200."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from service.callbacks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclass
class Received:
    headers: dict[str, str]  # names in lower case
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)

    def verified(self, secret: str, tolerance_s: float = 300) -> bool:
        return verify(
            secret, self.body, self.header(TIMESTAMP_HEADER), self.header(SIGNATURE_HEADER), tolerance_s
        )

    def header(self, name: str) -> str:
        return self.headers[name.lower()]


@dataclass
class Receiver:
    fail_first: int = 1
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    seen = Counter(r.headers.get(EVENT_ID_HEADER.lower()) for r in receiver.received)
                    status = 500 if seen[self.headers.get(EVENT_ID_HEADER)] < receiver.fail_first else 200
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    receiver.received.append(Received(headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def accepted(self) -> list[Received]:
        """The requests answered 200: each event the receiver took."""
        with self._lock:
            return [r for r in self.received if r.answered == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
