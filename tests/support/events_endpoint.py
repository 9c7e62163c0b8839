"""A tiny HTTP server standing in for ASYA_EVENTS_URL: records every posted body.

With `hold_first`, the first post is held (not answered, not recorded) until `release` is
set, so a test can see what the sidecar does while the endpoint is slow. Posts are recorded
when they are answered: one sent behind the held post on another connection would be
recorded before it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EventsEndpoint:
    def __init__(self, *, hold_first: bool = False) -> None:
        self.posts: list[dict[str, Any]] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not endpoint.first_arrived.is_set():
                    endpoint.first_arrived.set()
                    endpoint.release.wait(timeout=30)
                with endpoint._lock:
                    endpoint.posts.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/events"

    def events(self) -> list[Any]:
        """Every posted event, in the order the posts were recorded."""
        with self._lock:
            return [event for post in self.posts for event in post["events"]]

    def recorded(self) -> list[tuple[str, list[Any]]]:
        """(envelope_id, events) per post, in the order the posts were recorded."""
        with self._lock:
            return [(post["envelope_id"], post["events"]) for post in self.posts]

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
