"""The task event stream (GET /v1/tasks/<id>/events) over a real uvicorn server: the first
event is the task, then status and FLY events as reports arrive on the internal port, the
end after the terminal status, Last-Event-ID replay, keep-alives, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from asya_gateway.server import GatewayServer, GatewaySettings
from asya_gateway.sse import KEEPALIVE, TaskStream
from asya_gateway.store.sqlite import SQLiteStore
from asya_gateway.store.urls import sqlite_url
from asya_gateway.submit import Submission, build_envelope, build_task
from asya_shared import names, wire
from asya_transports.local import LocalTransport
from tests.gateway.gateway_fixtures import (
    NAMESPACE,
    ServeGateway,
    SseEvent,
    post_reports,
    read_events,
    report,
    serve_gateway,
    sse_subscribers,
)
from tests.support.services import free_port
from tests.support.waiting import eventually

__all__ = ["serve_gateway"]  # fixtures used here

# Generous: only a failing test waits this long.
STREAM_TIMEOUT_S = 60.0
StartGateway = Callable[..., Any]


@pytest.fixture
def start_gateway(serve_gateway: ServeGateway) -> StartGateway:
    """Start a gateway (SQLite store, local transport) on free ports; stopped at the end."""
    return serve_gateway


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=STREAM_TIMEOUT_S) as made:
        yield made


async def submit(client: httpx.AsyncClient, server: GatewayServer, **body: Any) -> str:
    response = await client.post(
        f"{server.url}/v1/tasks", json={"route": ["a", "b"], "payload": 1, **body}
    )
    assert response.status_code == 201, response.text
    task_id: str = response.json()["id"]
    return task_id


@contextlib.asynccontextmanager
async def stream(
    client: httpx.AsyncClient, server: GatewayServer, task_id: str, **headers: str
) -> AsyncIterator[AsyncIterator[SseEvent]]:
    url = f"{server.url}/v1/tasks/{task_id}/events"
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        yield read_events(response.aiter_lines())


async def rest(events: AsyncIterator[SseEvent]) -> list[SseEvent]:
    """Every further event until the server ends the stream (comments skipped)."""
    async with asyncio.timeout(STREAM_TIMEOUT_S):
        return [event async for event in events if event.kind is not None]


def journey(task_id: str) -> list[wire.HopReport]:
    """A two-actor task from pick-up to x-sink, with two streamed tokens on the way."""
    return [
        report(task_id, "received", curr="a", next_=["b"]),
        report(task_id, "fly", curr="a", next_=["b"], events=[{"token": "Hel"}, {"token": "lo"}]),
        report(task_id, "routed", prev=["a"], curr="b"),
        report(task_id, "succeeded", prev=["a", "b"], curr="x-sink", result={"text": "Hello"}),
    ]


async def test_the_stream_follows_a_task_to_its_end(
    start_gateway: StartGateway, client: httpx.AsyncClient
) -> None:
    server = await start_gateway()
    task_id = await submit(client, server)
    async with stream(client, server, task_id) as events:
        first = await anext(events)
        assert first.kind == "status"
        assert first.id is not None
        assert (first.data["id"], first.data["status"], first.data["progress"]) == (
            task_id, "pending", 0.0
        )  # fmt: skip
        await post_reports(client, server, *journey(task_id))
        following = await rest(events)
    assert [(event.kind, event.data) for event in following] == [
        ("status", {"status": "running", "actor": "a", "progress": 0.0}),
        ("fly", {"token": "Hel"}),
        ("fly", {"token": "lo"}),
        ("status", {"status": "running", "actor": "b", "progress": 0.5}),
        ("status", {"status": "succeeded", "actor": "x-sink", "progress": 1.0}),
    ]
    status_ids = [event.id for event in following if event.kind == "status" and event.id]
    assert len(status_ids) == 3
    assert all(event.id is None for event in following if event.kind == "fly")
    assert [first.id, *status_ids] == sorted([first.id, *status_ids])


async def test_a_reconnect_gets_the_status_events_it_missed(
    start_gateway: StartGateway, client: httpx.AsyncClient
) -> None:
    server = await start_gateway()
    task_id = await submit(client, server)
    async with stream(client, server, task_id) as events:
        first = await anext(events)
    await post_reports(client, server, *journey(task_id))

    async with stream(client, server, task_id, **{"Last-Event-ID": str(first.id)}) as events:
        missed = await rest(events)
    # Status events only: FLY events are live-only.
    assert [(event.kind, event.data["status"], event.data["actor"]) for event in missed] == [
        ("status", "running", "a"),
        ("status", "running", "b"),
        ("status", "succeeded", "x-sink"),
    ]
    # Reconnecting after the terminal event: the task as it ended, and the end.
    async with stream(client, server, task_id, **{"Last-Event-ID": str(missed[-1].id)}) as events:
        after_the_end = await rest(events)
    assert [(event.kind, event.data["status"]) for event in after_the_end] == [
        ("status", "succeeded")
    ]
    assert after_the_end[0].data["result"] == {"text": "Hello"}


async def test_a_finished_task_streams_its_state_and_ends(
    start_gateway: StartGateway, client: httpx.AsyncClient
) -> None:
    server = await start_gateway()
    task_id = await submit(client, server)
    assert (await client.delete(f"{server.url}/v1/tasks/{task_id}")).status_code == 200
    async with stream(client, server, task_id) as events:
        only = await rest(events)
    assert len(only) == 1
    assert (only[0].kind, only[0].data["status"], only[0].data["reason"]) == (
        "status", "canceled", "Canceled"
    )  # fmt: skip


async def test_an_idle_stream_gets_keep_alives_and_counts_as_a_subscriber(
    start_gateway: StartGateway, client: httpx.AsyncClient
) -> None:
    server = await start_gateway(keepalive_s=0.2)
    task_id = await submit(client, server)

    async def subscribers() -> float:
        return await sse_subscribers(client, server)

    async with stream(client, server, task_id) as events:
        assert (await anext(events)).kind == "status"
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            comment = await anext(events)
        assert comment.comment == "keep-alive"
        assert await subscribers() == 1.0
        # A report after keep-alives still arrives.
        await post_reports(client, server, report(task_id, "failed", reason="RuntimeError"))
        ending = await rest(events)
    assert [(event.kind, event.data["status"]) for event in ending] == [("status", "failed")]

    async def none_left() -> bool:
        return await subscribers() == 0.0

    await eventually(none_left, "the closed stream to stop counting as a subscriber")


async def test_stopping_the_gateway_ends_open_streams(
    start_gateway: StartGateway, client: httpx.AsyncClient
) -> None:
    server = await start_gateway()
    task_id = await submit(client, server)
    async with stream(client, server, task_id) as events:
        assert (await anext(events)).data["status"] == "pending"
        server.stop()
        assert await rest(events) == []
    async with asyncio.timeout(STREAM_TIMEOUT_S):
        await server.wait()


async def test_an_unknown_task_is_404_before_any_event(
    start_gateway: StartGateway, client: httpx.AsyncClient
) -> None:
    server = await start_gateway()
    response = await client.get(f"{server.url}/v1/tasks/nope/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_a_port_in_use_is_named(start_gateway: StartGateway, tmp_path: Path) -> None:
    running = await start_gateway()
    settings = GatewaySettings(
        port=running.port, internal_port=0, store_url=sqlite_url(tmp_path / "other.db")
    )
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{running.port}"):
        await GatewayServer(settings, {"ASYA_STATE_DIR": str(tmp_path / "state")}).start()


SERVE = """
import asyncio, logging, sys
from asya_gateway.server import GatewaySettings, serve
logging.basicConfig(level=logging.INFO)
public, internal, store, state = sys.argv[1:]
settings = GatewaySettings(port=int(public), internal_port=int(internal), store_url=store)
asyncio.run(serve(settings, {"ASYA_STATE_DIR": state}))
"""


async def test_sigterm_ends_streams_and_stops_the_process_cleanly(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    state_dir = tmp_path / "state"
    async with LocalTransport(state_dir) as admin:
        await admin.ensure_queue(names.queue_name(NAMESPACE, "a"))
    public, internal = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, str(public), str(internal),
        sqlite_url(tmp_path / "gateway.db"), str(state_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{public}"

        async def up() -> bool:
            return (await client.get(f"{base}/healthz")).status_code == 200

        await eventually(up, "the gateway process to serve", ignore=httpx.TransportError)
        response = await client.post(f"{base}/v1/tasks", json={"route": ["a"], "payload": 1})
        task_id = response.json()["id"]
        async with client.stream("GET", f"{base}/v1/tasks/{task_id}/events") as stream_:
            events = read_events(stream_.aiter_lines())
            assert (await anext(events)).data["status"] == "pending"
            process.send_signal(signal.SIGTERM)
            assert await rest(events) == []
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


class _Deaf:
    """A real store whose watch() never delivers: what a stream sees when a notification is
    lost (another replica's, delayed or dropped)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def watch(self, task_id: str | None = None) -> AsyncIterator[Any]:
        async def silence() -> AsyncIterator[Any]:
            await asyncio.Event().wait()
            yield None  # never reached

        return silence()


async def test_a_status_event_the_watch_missed_arrives_with_the_next_keep_alive(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        submission = Submission(route=("a",), payload=1)
        envelope = build_envelope(
            submission, task_id="t-missed", now=datetime.datetime.now(datetime.UTC),
            traceparent="00-x-01",
        )  # fmt: skip
        await store.create(build_task(submission, envelope, tenant=""))
        task_stream = TaskStream(_Deaf(store), "t-missed", "", last_event_id=None, keepalive=0.1)
        await task_stream.open()
        try:
            frames = task_stream.frames()
            assert b"event: status" in await anext(frames)
            await store.apply([report("t-missed", "succeeded", curr="x-sink", result=2)])
            async with asyncio.timeout(STREAM_TIMEOUT_S):
                rest_ = [frame async for frame in frames]
        finally:
            await task_stream.close()
    finally:
        await store.close()
    assert rest_[0] == KEEPALIVE
    assert b'"status":"succeeded"' in rest_[1]
    assert len(rest_) == 2  # and the stream ended after it


async def test_a_resumed_stream_never_repeats_what_came_before_its_id(
    start_gateway: StartGateway, client: httpx.AsyncClient
) -> None:
    server = await start_gateway(keepalive_s=0.2)
    task_id = await submit(client, server)
    await post_reports(client, server, report(task_id, "received", curr="a", next_=["b"]))
    async with stream(client, server, task_id) as events:
        current = await anext(events)
    assert current.data["status"] == "running"
    async with stream(client, server, task_id, **{"Last-Event-ID": str(current.id)}) as events:
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            # Nothing was missed: the first thing is a keep-alive (with its catch-up read).
            assert (await anext(events)).comment == "keep-alive"
            assert (await anext(events)).comment == "keep-alive"
        await post_reports(client, server, report(task_id, "routed", prev=["a"], curr="b"))
        await post_reports(client, server, report(task_id, "canceled", prev=["a"], curr="b"))
        ending = await rest(events)
    assert [(event.data["status"], event.data["actor"]) for event in ending] == [
        ("running", "b"),
        ("canceled", "b"),
    ]
