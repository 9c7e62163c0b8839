"""A real HTTP server on loopback that stands in for the gateway's internal port: it takes
`POST /internal/v1/reports` as the gateway does (docs/gateway.md), records every batch, and
answers with the cancellations after the caller's cursor.

For the tests of what sidecars and the crew report: `receiver.reports` is everything
received, in arrival order; `receiver.cancel(id)` makes the id part of the answers (each
caller gets it once, as its cursor moves past it); `receiver.fail_next(n, status)` answers
the next n requests with an error status instead; `receiver.hold()` keeps every answer back
(the batch is recorded at once) until `receiver.release()`. Use it as a context manager:

    with ReportReceiver() as receiver:
        ... ASYA_GATEWAY_URL=receiver.url ...
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Batch", "ReportReceiver"]

PATH = "/internal/v1/reports"
HOLD_LIMIT_S = 60.0  # a held answer goes out after this even if the test forgot release()


@dataclass(frozen=True)
class Batch:
    actor: str  # the x-asya-actor header: which sidecar or crew actor posted it
    reports: list[dict[str, Any]]
    cursor: int  # canceled_cursor as sent
    status: int  # what it was answered
    canceled: list[str]  # the ids the answer carried


class ReportReceiver:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._canceled: list[str] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._answering = threading.Event()
        self._answering.set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval: stopping waits for at most one.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def reports(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for b in self.batches if b.status == 200 for r in b.reports]

    def about(self, envelope_id: str) -> list[dict[str, Any]]:
        return [r for r in self.reports if r.get("id") == envelope_id]

    def events(self, envelope_id: str) -> list[tuple[str, str]]:
        """(actor, event) of every accepted report about `envelope_id`, in arrival order."""
        return [(r["actor"], r["event"]) for r in self.about(envelope_id)]

    def posts_from(self, actor: str) -> list[Batch]:
        with self._lock:
            return [b for b in self.batches if b.actor == actor]

    def cancel(self, envelope_id: str) -> None:
        with self._lock:
            self._canceled.append(envelope_id)

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def hold(self) -> None:
        """Record batches as they come but answer none until release()."""
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._answering.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ReportReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, actor: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("reports"), list):
            error = {"code": "bad_request", "message": "expected {'reports': [...]}"}
            return 400, {"error": error}
        cursor = body.get("canceled_cursor", 0)
        with self._lock:
            if self._failures:
                status = self._failures.pop(0)
                self.batches.append(Batch(actor, body["reports"], cursor, status, []))
                return status, {"error": {"code": "unavailable", "message": "scripted"}}
            canceled = self._canceled[cursor:]
            self.batches.append(Batch(actor, body["reports"], cursor, 200, canceled))
            answer = {
                "accepted": len(body["reports"]),
                "canceled": canceled,
                "canceled_cursor": len(self._canceled),
            }
            return 200, answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != PATH:
                    status, answer = 404, {"error": {"code": "not_found", "message": self.path}}
                else:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = None
                    status, answer = receiver._answer(self.headers.get("x-asya-actor", ""), body)
                data = json.dumps(answer).encode()
                receiver._answering.wait(timeout=HOLD_LIMIT_S)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the recorded batches are the log

        return Handler
