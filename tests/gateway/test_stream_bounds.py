"""Streams hold bounded resources: a follower that stops reading is dropped instead of
buffered for, a client that stops taking bytes is disconnected, a follower of one task is not
woken by others, and 200 streams of one task each see the whole task."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from asya_gateway import sse
from asya_gateway.server import GatewayServer
from asya_gateway.store.sqlite import SQLiteStore
from asya_shared import wire
from tests.gateway.gateway_fixtures import (
    Harness,
    ServeGateway,
    SseEvent,
    local_transport,
    make_harness,
    read_events,
    report,
    serve_gateway,
    sqlite_store,
    sse_subscribers,
)
from tests.support.waiting import eventually

__all__ = ["local_transport", "make_harness", "serve_gateway", "sqlite_store"]  # fixtures used here

STREAM_TIMEOUT_S = 60.0
SUBSCRIBERS = 200


async def submitted(harness: Harness) -> str:
    response = await harness.submit({"route": ["a", "b"], "payload": {}})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


def fly(task_id: str, count: int, size: int = 10) -> wire.HopReport:
    """`count` side events of about `size` bytes each, in one report."""
    padded = [{"n": i, "pad": "x" * size} for i in range(count)]
    return report(task_id, "fly", curr="a", next_=["b"], events=padded)


# -- a follower that stops reading ---------------------------------------------------------


async def test_a_follower_that_falls_too_far_behind_is_dropped_not_buffered_for(
    make_harness: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "MAX_BACKLOG", 10)
    harness: Harness = await make_harness()
    task_id = await submitted(harness)
    stream = await harness.gateway.follow(task_id, "")
    try:
        updates = stream.updates()
        first = await anext(updates)
        assert first is not None
        assert first.data["status"] == "pending"

        await harness.report(fly(task_id, 30))
        await eventually(lambda: stream.overflowed, "the stream to overflow")
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            after = [update async for update in updates]
    finally:
        await stream.close()
    # Nothing of the backlog is delivered: it was dropped when the bound was passed.
    assert after == []
    # The task itself is untouched, and a new follower starts from its state.
    again = await harness.gateway.follow(task_id, "")
    try:
        opening = await anext(again.updates())
    finally:
        await again.close()
    assert opening is not None
    assert opening.data["status"] == "pending"


async def test_a_follower_within_the_bound_gets_every_update(
    make_harness: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "MAX_BACKLOG", 50)
    harness: Harness = await make_harness()
    task_id = await submitted(harness)
    stream = await harness.gateway.follow(task_id, "")
    try:
        await harness.report(fly(task_id, 30))
        await harness.report(report(task_id, "succeeded", prev=["a", "b"], curr="x-sink",
                                    result={"ok": True}))  # fmt: skip
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            seen = [update async for update in stream.updates() if update is not None]
    finally:
        await stream.close()
    assert not stream.overflowed
    assert [update.data["n"] for update in seen if update.kind == "fly"] == list(range(30))
    assert seen[-1].terminal
    assert seen[-1].data["status"] == "succeeded"


# -- watching one task ---------------------------------------------------------------------


async def test_a_follower_subscribes_to_its_task_only(
    make_harness: Callable[..., Any], sqlite_store: SQLiteStore
) -> None:
    harness: Harness = await make_harness()
    mine, other = await submitted(harness), await submitted(harness)
    stream = await harness.gateway.follow(mine, "")
    try:
        updates = stream.updates()
        await anext(updates)
        await harness.report(fly(other, 5))
        await harness.report(fly(mine, 1))
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            update = await anext(updates)
    finally:
        await stream.close()
    assert update is not None
    assert (update.kind, update.data["n"]) == ("fly", 0)


# -- a client that stops taking bytes ------------------------------------------------------


@pytest.fixture
async def served(serve_gateway: ServeGateway) -> GatewayServer:
    return await serve_gateway(send_timeout_s=0.5)


async def test_a_client_that_takes_no_bytes_is_disconnected(served: GatewayServer) -> None:
    async with httpx.AsyncClient(timeout=STREAM_TIMEOUT_S) as client:
        created = await client.post(f"{served.url}/v1/tasks",
                                    json={"route": ["a", "b"], "payload": {}})  # fmt: skip
        task_id = created.json()["id"]
        # A reader with a tiny receive window that never reads.
        stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", served.port))
        try:
            stuck.sendall(
                f"GET /v1/tasks/{task_id}/events HTTP/1.1\r\nHost: gw\r\n\r\n".encode("ascii")
            )
            await eventually(lambda: sse_subscribers(client, served), "the stream to open")
            # Several MB of side events: far more than the socket buffers hold.
            for _ in range(40):
                response = await client.post(
                    f"{served.internal_url}/internal/v1/reports",
                    json={"reports": [fly(task_id, 4, size=64 * 1024)]},
                )
                assert response.status_code == 200

            async def gone() -> bool:
                return await sse_subscribers(client, served) == 0.0

            await eventually(gone, "the stuck stream to be dropped", timeout=STREAM_TIMEOUT_S)
        finally:
            stuck.close()
        # The task goes on, and the gateway still serves.
        task = (await client.get(f"{served.url}/v1/tasks/{task_id}")).json()
        assert task["status"] == "pending"  # side events do not move it


# -- many streams of one task --------------------------------------------------------------


async def test_200_streams_of_one_task_each_see_the_whole_task(served: GatewayServer) -> None:
    limits = httpx.Limits(max_connections=SUBSCRIBERS + 10, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=STREAM_TIMEOUT_S, limits=limits) as client:
        created = await client.post(f"{served.url}/v1/tasks",
                                    json={"route": ["a", "b"], "payload": {}})  # fmt: skip
        task_id = created.json()["id"]
        opened = asyncio.Event()
        ready = 0

        async def follow() -> list[SseEvent]:
            nonlocal ready
            url = f"{served.url}/v1/tasks/{task_id}/events"
            async with client.stream("GET", url) as response:
                assert response.status_code == 200
                events = read_events(response.aiter_lines())
                first = await anext(events)
                ready += 1
                if ready == SUBSCRIBERS:
                    opened.set()
                return [first, *[event async for event in events if event.kind is not None]]

        async with asyncio.timeout(STREAM_TIMEOUT_S):
            followers = [asyncio.create_task(follow()) for _ in range(SUBSCRIBERS)]
            await opened.wait()
            journey = [
                report(task_id, "received", curr="a", next_=["b"]),
                fly(task_id, 3),
                report(task_id, "routed", prev=["a"], curr="b"),
                report(task_id, "succeeded", prev=["a", "b"], curr="x-sink", result={"n": 1}),
            ]
            response = await client.post(
                f"{served.internal_url}/internal/v1/reports", json={"reports": journey}
            )
            assert response.status_code == 200
            seen = await asyncio.gather(*followers)
    expected = [
        ("status", "pending"),
        ("status", "running"),
        ("fly", 0),
        ("fly", 1),
        ("fly", 2),
        ("status", "running"),
        ("status", "succeeded"),
    ]
    for events in seen:
        got = [(e.kind, e.data["status"] if e.kind == "status" else e.data["n"]) for e in events]
        assert got == expected
    assert json.dumps(seen[0][-1].data) == json.dumps(
        {"status": "succeeded", "actor": "x-sink", "progress": 1.0}
    )


# -- subscribed before submitted -----------------------------------------------------------


async def test_submit_and_follow_misses_no_event_of_a_task_that_ends_at_once(
    make_harness: Callable[..., Any],
) -> None:
    harness: Harness = await make_harness()
    gateway = harness.gateway
    submission = gateway.parse(b'{"route": ["a", "b"], "payload": {}}')
    task, created, stream = await gateway.submit_and_follow(submission, "")
    try:
        # The whole task happens before the follower reads a thing.
        await harness.report(
            report(task.id, "received", curr="a", next_=["b"]),
            fly(task.id, 2),
            report(task.id, "succeeded", prev=["a", "b"], curr="x-sink", result={"ok": 1}),
        )
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            seen = [update async for update in stream.updates() if update is not None]
    finally:
        await stream.close()
    assert created
    assert [(u.kind, u.data.get("status", u.data.get("n"))) for u in seen] == [
        ("status", "pending"),
        ("status", "running"),
        ("fly", 0),
        ("fly", 1),
        ("status", "succeeded"),
    ]


async def test_submit_and_follow_of_a_known_id_opens_with_the_task_as_it_is(
    make_harness: Callable[..., Any],
) -> None:
    harness: Harness = await make_harness()
    gateway = harness.gateway
    submission = gateway.parse(b'{"route": ["a"], "payload": {}, "id": "known-1"}')
    first, _, stream = await gateway.submit_and_follow(submission, "")
    await stream.close()
    await harness.report(report(first.id, "succeeded", curr="x-sink", result={"ok": 1}))

    again, created, stream = await gateway.submit_and_follow(submission, "")
    try:
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            seen = [update async for update in stream.updates() if update is not None]
    finally:
        await stream.close()
    assert not created
    assert again.id == first.id
    assert [(u.kind, u.data["status"], u.terminal) for u in seen] == [("status", "succeeded", True)]
