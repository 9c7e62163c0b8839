"""A real HTTP/1.1 server on loopback whose answers a test scripts: for the callers' tests
that need a status a model server will not give on demand (429 with Retry-After, 503, a
slow answer), and for the plain JSON POST caller.

Each request is recorded (path, headers, JSON body, client port, arrival time). Answers are
taken from the queue of scripted answers for the path; when it is empty, the default answer
echoes the request body back as `{"echo": body}`. Keep-alive is on, so a test can see whether
a client reuses its connection (the same client port).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["Answer", "Recorded", "ScriptedServer", "scripted_server"]


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None  # JSON-encoded unless it is bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # the server stalls this long before answering (a slow model)


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    client_port: int
    at: float  # time.monotonic() on arrival


class ScriptedServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: dict[str, deque[Answer]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._script[path].extend(answers)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_answer(self, path: str, body: Any) -> Answer:
        with self._lock:
            queued = self._script[path]
            return queued.popleft() if queued else Answer(body={"echo": body})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with server._lock:
                    server.requests.append(
                        Recorded(
                            self.path,
                            dict(self.headers),
                            body,
                            self.client_address[1],
                            time.monotonic(),
                        )
                    )
                answer = server._next_answer(self.path, body)
                if answer.delay:
                    # The stall is the behaviour under test (a server slower than the
                    # client's timeout), not a wait for something to happen.
                    time.sleep(answer.delay)
                data = (
                    answer.body
                    if isinstance(answer.body, bytes)
                    else json.dumps(answer.body).encode()
                )
                self.send_response(answer.status)
                headers = {"Content-Type": "application/json", **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the recorded requests are the log

        return Handler


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.start()
    yield server
    server.stop()
