"""A real webhook receiver for black-box tests: an HTTP server on 127.0.0.1 that verifies every delivery's
signature with `standardwebhooks` (as the SPEC's receivers do) and records what arrived, in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass(frozen=True)
class Arrival:
    msg_id: str
    position: int
    type: str
    body: dict[str, Any]
    status: int  # what the receiver answered
    at: float  # time.monotonic() when it arrived


@dataclass
class Receiver:
    answer: Callable[[], int] = lambda: 200  # the status to answer the next delivery with
    delay: float = 0.0  # seconds to take before answering
    secret: str | None = None  # set once the webhook is created
    arrivals: list[Arrival] = field(default_factory=list)
    forged: list[str] = field(default_factory=list)  # deliveries whose signature did not verify
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[Arrival]:
        """What was answered with 2xx, in arrival order."""
        with self._lock:
            return [a for a in self.arrivals if 200 <= a.status < 300]

    def wait_for(self, count: int, timeout: float) -> list[Arrival]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.delivered()
            if len(done) >= count:
                return done
            time.sleep(0.05)
        raise AssertionError(f"{len(self.delivered())} of {count} deliveries arrived within {timeout} s")

    def wait_for_all(self, expected: list[int], timeout: float) -> list[Arrival]:
        """Wait until each of the `expected` positions was delivered (some maybe more than once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.delivered()
            if set(expected) <= {a.position for a in done}:
                return done
            time.sleep(0.05)
        missing = sorted(set(expected) - {a.position for a in self.delivered()})
        raise AssertionError(f"positions {missing} were not delivered within {timeout} s")

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        at = time.monotonic()
        body = handler.rfile.read(int(handler.headers.get("content-length", 0)))
        if self.delay:
            time.sleep(self.delay)
        headers = {k: v for k, v in handler.headers.items()}
        try:
            assert self.secret is not None
            payload = Webhook(self.secret).verify(body, headers)
        except Exception as error:
            with self._lock:
                self.forged.append(f"{type(error).__name__}: {error}")
            status = 400
        else:
            status = self.answer()
            arrival = Arrival(headers["webhook-id"], payload["data"]["position"], payload["type"], payload, status, at)
            with self._lock:
                self.arrivals.append(arrival)
        handler.send_response(status)
        handler.send_header("content-length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")


@contextmanager
def running(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver._handle(self)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def positions(arrivals: list[Arrival]) -> list[int]:
    return [a.position for a in arrivals]
