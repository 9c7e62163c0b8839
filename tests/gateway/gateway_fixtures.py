"""What the API, SSE and auth tests share: a real SQLite store in a temporary file, the real
local transport in a temporary state dir, the gateway's apps driven in process (httpx's ASGI
transport) or served by real uvicorn servers, and small builders for reports and events.

Test modules import the fixtures they use from here (`from tests.gateway.gateway_fixtures
import ...`), so this file does not compete with a conftest other gateway tests may keep.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import asya_transports as transports
from asya_gateway.app import Gateway, internal_app, public_app
from asya_gateway.auth import ApiKeys
from asya_gateway.flows import Flow
from asya_gateway.server import GatewayServer, GatewaySettings
from asya_gateway.store.sqlite import SQLiteStore
from asya_gateway.store.urls import sqlite_url
from asya_shared import names, wire
from asya_transports.local import LocalTransport

__all__ = [
    "ACTORS",
    "SERVED_STATE",
    "Harness",
    "ServeGateway",
    "SseEvent",
    "harness",
    "local_transport",
    "make_harness",
    "post_reports",
    "read_events",
    "receive_envelope",
    "report",
    "serve_gateway",
    "sqlite_store",
    "sse_subscribers",
]

NAMESPACE = "default"
# Queues that exist in every harness: the actors tests route through, and the crew.
ACTORS = ("a", "b", "c", names.SINK, names.SUMP)
# Generous: only a failing test waits this long, and other helpers share the machine.
RECEIVE_TIMEOUT_S = 30.0


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "gateway.db", poll_interval=0.05)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def local_transport(tmp_path: Path) -> AsyncIterator[transports.Broker]:
    transport = transports.create("local", {"ASYA_STATE_DIR": str(tmp_path / "queues")})
    async with transport:
        for actor in ACTORS:
            await transport.ensure_queue(names.queue_name(NAMESPACE, actor))
        yield transport


@dataclass
class Harness:
    """A gateway and in-process clients of its two apps."""

    gateway: Gateway
    store: SQLiteStore
    transport: transports.Broker
    public: httpx.AsyncClient
    internal: httpx.AsyncClient
    _clients: list[httpx.AsyncClient] = field(default_factory=list)
    # The public app's lifespan (what its front doors run while serving), left on aclose.
    _lifespan: Lifespan | None = None

    async def submit(self, body: Mapping[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.public.post("/v1/tasks", json=body, **kwargs)

    async def report(self, *reports: wire.HopReport, cursor: int = 0) -> httpx.Response:
        return await self.internal.post(
            "/internal/v1/reports", json={"reports": list(reports), "canceled_cursor": cursor}
        )

    async def depth(self, actor: str) -> int:
        return await self.transport.queue_depth(names.queue_name(NAMESPACE, actor))

    async def aclose(self) -> None:
        for client in (self.public, self.internal):
            await client.aclose()
        if self._lifespan is not None:
            await self._lifespan.stop()


class Lifespan:
    """An app's lifespan, entered and left in one task of its own, as a server does it: the
    SDKs behind the front doors hold anyio cancel scopes, which must be left in the task
    that entered them (a fixture's setup and teardown run in different tasks)."""

    def __init__(self, task: asyncio.Task[None], stopping: asyncio.Event) -> None:
        self._task = task
        self._stopping = stopping

    @classmethod
    async def start(cls, app: Any) -> Lifespan:
        started, stopping = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with app.router.lifespan_context(app):
                started.set()
                await stopping.wait()

        task = asyncio.create_task(run(), name="gateway lifespan")
        done, _ = await asyncio.wait(
            [task, asyncio.ensure_future(started.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # raises why the lifespan did not start
        return cls(task, stopping)

    async def stop(self) -> None:
        self._stopping.set()
        await self._task


MakeHarness = Callable[..., Any]


@pytest.fixture
async def make_harness(
    sqlite_store: SQLiteStore, local_transport: transports.Broker
) -> AsyncIterator[Callable[..., Any]]:
    """Build a Harness on the shared store; keyword arguments go to Gateway (a `transport`
    replaces the local one)."""
    made: list[Harness] = []

    async def make(
        *,
        transport: transports.Broker | None = None,
        flows: Mapping[str, Flow] | None = None,
        keys: ApiKeys | None = None,
        **options: Any,
    ) -> Harness:
        broker = transport or local_transport
        gateway = Gateway(
            sqlite_store, broker, namespace=NAMESPACE, flows=flows, keys=keys, **options
        )
        public = public_app(gateway)
        made.append(
            Harness(
                gateway,
                sqlite_store,
                broker,
                _client(public, "http://gateway"),
                _client(internal_app(gateway), "http://gateway-internal"),
            )
        )
        # httpx's ASGI transport does not run lifespans: run it as a server would.
        made[-1]._lifespan = await Lifespan.start(public)
        return made[-1]

    yield make
    for harness_ in made:
        await harness_.aclose()


@pytest.fixture
async def harness(make_harness: Callable[..., Any]) -> Harness:
    made: Harness = await make_harness()
    return made


# Where a served gateway's queues live, under the test's tmp_path.
SERVED_STATE = "state"
ServeGateway = Callable[..., Awaitable[GatewayServer]]


@pytest.fixture
async def serve_gateway(tmp_path: Path) -> AsyncIterator[ServeGateway]:
    """Serve gateways with real uvicorn on free ports, all on one SQLite store in tmp_path
    and one local transport in tmp_path / SERVED_STATE (with the ACTORS' queues), so a
    second one is another replica of the first. Keyword arguments: `flows_file` and
    `api_keys_file` for the settings, anything else for GatewayServer. All are stopped at
    the end."""
    state_dir = tmp_path / SERVED_STATE
    async with LocalTransport(state_dir) as admin:
        for actor in ACTORS:
            await admin.ensure_queue(names.queue_name(NAMESPACE, actor))
    started: list[GatewayServer] = []

    async def serve(
        *, flows_file: str | None = None, api_keys_file: str | None = None, **options: Any
    ) -> GatewayServer:
        settings = GatewaySettings(
            port=0,
            internal_port=0,
            store_url=sqlite_url(tmp_path / "gateway.db"),
            flows_file=flows_file,
            api_keys_file=api_keys_file,
        )
        server = GatewayServer(settings, {"ASYA_STATE_DIR": str(state_dir)}, **options)
        await server.start()
        started.append(server)
        return server

    yield serve
    for server in started:
        server.stop()
    for server in started:
        await server.wait()


async def sse_subscribers(client: httpx.AsyncClient, server: GatewayServer) -> float:
    """The gateway's open event streams, as its /metrics says."""
    text = (await client.get(f"{server.url}/metrics")).text
    line = next(ln for ln in text.splitlines() if ln.startswith("asya_gateway_sse_subscribers"))
    return float(line.split()[-1])


def _client(app: Any, base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def receive_envelope(transport: transports.Broker, actor: str) -> dict[str, Any]:
    """The next envelope on `actor`'s queue (acked), read with the transport's receive API."""
    receiver = transport.receive(names.queue_name(NAMESPACE, actor), prefetch=1)
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            delivery = await anext(receiver)
        await delivery.ack()
    finally:
        await receiver.aclose()
    envelope: dict[str, Any] = json.loads(delivery.body)
    return envelope


async def post_reports(client: httpx.AsyncClient, server: Any, *reports: wire.HopReport) -> None:
    """Post `reports` to a served gateway's internal port (`server.internal_url`), as a
    sidecar would; the gateway must take them."""
    response = await client.post(
        f"{server.internal_url}/internal/v1/reports", json={"reports": list(reports)}
    )
    assert response.status_code == 200, response.text


def report(
    task_id: str,
    event: str,
    *,
    prev: Sequence[str] = (),
    curr: str = "a",
    next_: Sequence[str] = (),
    attempt: int = 1,
    at: str = "2030-01-01T00:00:00.000Z",
    **extra: Any,
) -> wire.HopReport:
    """A HopReport as a sidecar or the crew would post it."""
    made: dict[str, Any] = {
        "id": task_id,
        "parent_id": None,
        "actor": curr,
        "event": event,
        "route": {"prev": list(prev), "curr": curr, "next": list(next_)},
        "attempt": attempt,
        "at": at,
        **extra,
    }
    return made  # type: ignore[return-value]  # the keys above are HopReport's


@dataclass(frozen=True)
class SseEvent:
    kind: str | None  # `event:`; None for a comment
    data: Any
    id: int | None
    comment: str | None = None


async def read_events(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    """Parse an SSE stream line by line: events and comments, as they complete."""
    kind: str | None = None
    data: list[str] = []
    event_id: int | None = None
    async for line in lines:
        if line.startswith(":"):
            yield SseEvent(None, None, None, comment=line[1:].strip())
        elif line.startswith("event:"):
            kind = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].strip())
        elif line.startswith("id:"):
            event_id = int(line.partition(":")[2].strip())
        elif line == "" and (kind or data):
            yield SseEvent(kind, json.loads("\n".join(data)), event_id)
            kind, data, event_id = None, [], None
