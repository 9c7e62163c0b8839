"""EventForwarder against a real HTTP endpoint: side events arrive in the order handlers
emitted them, even when the endpoint is slow, and queued events of one envelope share a post."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from asya_sidecar.events import EventForwarder
from asya_sidecar.metrics import SidecarMetrics
from tests.support.events_endpoint import EventsEndpoint
from tests.support.waiting import eventually


@pytest.fixture
def endpoint() -> Iterator[EventsEndpoint]:
    held = EventsEndpoint(hold_first=True)
    yield held
    held.stop()


async def test_events_reach_a_slow_endpoint_in_the_order_they_were_emitted(
    endpoint: EventsEndpoint,
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


async def test_close_waits_for_queued_events_to_be_posted(endpoint: EventsEndpoint) -> None:
    forwarder = EventForwarder(url=endpoint.url, actor="a", metrics=SidecarMetrics("a"))
    forwarder.forward([{"n": 1}], envelope_id="one")
    await eventually(endpoint.first_arrived.is_set, what="the first post at the endpoint")
    forwarder.forward([{"n": 2}], envelope_id="two")
    endpoint.release.set()
    await asyncio.wait_for(forwarder.close(), timeout=10)
    assert endpoint.recorded() == [("one", [{"n": 1}]), ("two", [{"n": 2}])]
