"""EventForwarder against a real HTTP endpoint: side events arrive in the order handlers
emitted them, even when the endpoint is slow, and queued events of one envelope share a post."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from asya_sidecar.events import EventForwarder
from asya_sidecar.metrics import SidecarMetrics
from tests.support.waiting import eventually


class HeldEndpoint:
    """Records each post when it answers it; the first post is held until released, so any
    post sent behind it on another connection would be recorded first."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()
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

    def recorded(self) -> list[tuple[str, list[Any]]]:
        with self._lock:
            return [(post["envelope_id"], post["events"]) for post in self.posts]

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def endpoint() -> Iterator[HeldEndpoint]:
    held = HeldEndpoint()
    yield held
    held.stop()


async def test_events_reach_a_slow_endpoint_in_the_order_they_were_emitted(
    endpoint: HeldEndpoint,
) -> None:
    forwarder = EventForwarder(url=endpoint.url, actor="a", metrics=SidecarMetrics("a"))
    forwarder.forward([{"text": "He"}], envelope_id="one")
    await eventually(endpoint.first_arrived.is_set, what="the first post at the endpoint")
    forwarder.forward([{"text": "ll"}], envelope_id="one")
    forwarder.forward([{"text": "o"}], envelope_id="one")
    forwarder.forward([{"text": "Hi"}], envelope_id="two")
    forwarder.forward([{"text": "!"}], envelope_id="one")
    endpoint.release.set()

    def every_post() -> list[tuple[str, list[Any]]] | None:
        posts = endpoint.recorded()
        return posts if len(posts) >= 4 else None

    await eventually(every_post, what="every post", details=lambda: str(endpoint.recorded()))
    assert endpoint.recorded() == [
        ("one", [{"text": "He"}]),
        ("one", [{"text": "ll"}, {"text": "o"}]),
        ("two", [{"text": "Hi"}]),
        ("one", [{"text": "!"}]),
    ]
    await forwarder.close()


async def test_close_waits_for_queued_events_to_be_posted(endpoint: HeldEndpoint) -> None:
    forwarder = EventForwarder(url=endpoint.url, actor="a", metrics=SidecarMetrics("a"))
    forwarder.forward([{"n": 1}], envelope_id="one")
    await eventually(endpoint.first_arrived.is_set, what="the first post at the endpoint")
    forwarder.forward([{"n": 2}], envelope_id="two")
    endpoint.release.set()
    await asyncio.wait_for(forwarder.close(), timeout=10)
    assert endpoint.recorded() == [("one", [{"n": 1}]), ("two", [{"n": 2}])]
