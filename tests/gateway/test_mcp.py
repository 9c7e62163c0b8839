"""The MCP front door (/mcp) through the official `mcp` client (ClientSession over Streamable
HTTP) against a real uvicorn-served gateway: tools/list from the flows, tools/call driven to
its end by sidecar reports posted to the internal port (progress and FLY events on the way),
failures, invalid arguments, unknown tools, timeouts, auth and tenants."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, LoggingMessageNotificationParams, TextContent

from asya_gateway import mcp_tools
from asya_gateway.auth import hash_key
from asya_gateway.server import GatewayServer
from asya_shared import wire
from asya_transports.local import LocalTransport
from tests.gateway.gateway_fixtures import (
    ServeGateway,
    post_reports,
    receive_envelope,
    report,
    serve_gateway,
)
from tests.support.waiting import eventually

__all__ = ["serve_gateway"]  # fixtures used here

# Generous: only a failing test waits this long.
TIMEOUT_S = 60.0

FLOWS = """
flows:
  - name: greet
    route: [a, b]
    description: Greets whoever is named, in two hops
    input_schema:
      type: object
      required: [name]
      properties:
        name: {type: string}
  - name: anything
    route: [a]
  - name: quick
    route: [a]
    description: Gives up waiting after a moment
    timeout: 300ms
  - name: count
    route: [a]
    input_schema: {type: integer}
"""
KEYS = {"acme-key": "acme", "globex-key": "globex"}


@pytest.fixture
def gateway(tmp_path: Path, serve_gateway: ServeGateway) -> Callable[..., Awaitable[GatewayServer]]:
    """Start a gateway serving FLOWS (with KEYS when `auth=True`); stopped at the end."""
    flows_file = tmp_path / "flows.yaml"
    flows_file.write_text(FLOWS)
    keys_file = tmp_path / "keys"
    keys_file.write_text("".join(f"{hash_key(key)}: {tenant}\n" for key, tenant in KEYS.items()))

    async def start(*, auth: bool = False) -> GatewayServer:
        return await serve_gateway(
            flows_file=str(flows_file), api_keys_file=str(keys_file) if auth else None
        )

    return start


# The two ways the official client opens a session: the `initialize` handshake (protocol
# 2025-11-25) and `server/discover` (2026-07-28: every request stands alone).
ERAS = ["handshake", "discover"]


@contextlib.asynccontextmanager
async def connected(
    server: GatewayServer, key: str | None = None, *, era: str = "handshake", **callbacks: Any
) -> AsyncIterator[ClientSession]:
    """An initialized official client session on the gateway's /mcp."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with (
        httpx2.AsyncClient(headers=headers, timeout=TIMEOUT_S) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write, **callbacks) as session,
    ):
        if era == "handshake":
            await session.initialize()
        else:
            await session.discover()
        yield session


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as made:
        yield made


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def created_task(
    client: httpx.AsyncClient, server: GatewayServer, key: str | None = None
) -> dict[str, Any]:
    """The one task the test's tool call created, once it exists."""

    async def listed() -> list[dict[str, Any]]:
        response = await client.get(f"{server.url}/v1/tasks", headers=auth(key))
        tasks: list[dict[str, Any]] = response.json()["tasks"]
        return tasks

    tasks: list[dict[str, Any]] = await eventually(listed, "the tool call to create its task")
    first: dict[str, Any] = tasks[0]
    return first


def watchers(server: GatewayServer) -> int:
    """Subscriptions to the store's events: each call following its task holds one."""
    count: int = server.gateway.store.inner._hub.subscribers  # type: ignore[attr-defined]
    return count


async def followed_task(
    client: httpx.AsyncClient, server: GatewayServer, idle: int, key: str | None = None
) -> dict[str, Any]:
    """The call's task, once the call follows it (`idle`: watchers before the call): a
    report posted earlier would be over before the call looked, and FLY events are live."""
    task = await created_task(client, server, key)
    await eventually(lambda: watchers(server) > idle, "the call to follow its task")
    return task


def journey(task_id: str, result: Any) -> list[wire.HopReport]:
    """A two-actor task from pick-up to x-sink, with two streamed tokens on the way."""
    return [
        report(task_id, "received", curr="a", next_=["b"]),
        report(task_id, "fly", curr="a", next_=["b"], events=[{"token": "Hel"}, {"token": "lo"}]),
        report(task_id, "routed", prev=["a"], curr="b"),
        report(task_id, "succeeded", prev=["a", "b"], curr="x-sink", result=result),
    ]


async def call_while(
    call: Awaitable[CallToolResult], drive: Callable[[], Awaitable[Any]]
) -> CallToolResult:
    """The result of `call`, with `drive` (which moves its task) running alongside."""
    async with asyncio.timeout(TIMEOUT_S):
        result, _ = await asyncio.gather(call, drive())
    return result


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def task_count(client: httpx.AsyncClient, server: GatewayServer) -> int:
    response = await client.get(f"{server.url}/v1/tasks")
    return len(response.json()["tasks"])


# ------------------------------------------------------------------------------- tools/list


async def test_the_tools_are_the_flows(gateway: Any) -> None:
    server = await gateway()
    async with connected(server) as session:
        listed = await session.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert sorted(tools) == ["anything", "count", "greet", "quick"]
    assert tools["greet"].description == "Greets whoever is named, in two hops"
    assert tools["greet"].input_schema == {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}},
    }
    # No schema: any object.
    assert tools["anything"].input_schema == {"type": "object"}
    assert tools["anything"].description is None
    # A schema of another type is the one argument `payload`.
    assert tools["count"].input_schema["properties"] == {"payload": {"type": "integer"}}
    assert tools["count"].input_schema["required"] == ["payload"]


# ------------------------------------------------------------------------------- tools/call


@pytest.mark.parametrize("era", ERAS)
async def test_a_call_answers_the_result_with_progress_and_fly_events_on_the_way(
    gateway: Any, client: httpx.AsyncClient, era: str
) -> None:
    server = await gateway()
    steps: list[tuple[float, float | None, str | None]] = []
    logs: list[LoggingMessageNotificationParams] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append((progress, total, message))

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)

    idle = watchers(server)

    async def drive() -> None:
        task = await followed_task(client, server, idle)
        assert task["route"] == {"prev": [], "curr": "a", "next": ["b"]}
        await post_reports(client, server, *journey(task["id"], {"text": "Hello, Ada"}))

    # In 2026-07-28 a request opts in to log messages (the client's log_level does).
    async with connected(server, era=era, logging_callback=on_log, log_level="info") as session:
        call = session.call_tool("greet", {"name": "Ada"}, progress_callback=on_progress)
        result = await call_while(call, drive)

    assert not result.is_error
    assert result.structured_content == {"text": "Hello, Ada"}
    assert text_of(result) == '{"text": "Hello, Ada"}'
    task_id = result.meta and result.meta[mcp_tools.TASK_ID_META]
    assert isinstance(task_id, str)
    assert steps == [
        (0.0, 1.0, "running at a"),
        (0.5, 1.0, "running at b"),
        (1.0, 1.0, "succeeded"),
    ]
    assert [(log.level, log.logger, log.data) for log in logs] == [
        ("info", "asya.fly", {"token": "Hel"}),
        ("info", "asya.fly", {"token": "lo"}),
    ]


async def test_a_result_that_is_no_object_is_wrapped(
    gateway: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    server = await gateway()

    async def drive() -> None:
        task = await created_task(client, server)
        async with LocalTransport(tmp_path / "state") as transport:
            envelope = await receive_envelope(transport, "a")
        assert envelope["payload"] == 41  # the `payload` argument, unwrapped
        await post_reports(
            client, server, report(task["id"], "succeeded", curr="x-sink", result=42)
        )

    async with connected(server) as session:
        result = await call_while(session.call_tool("count", {"payload": 41}), drive)
    assert not result.is_error
    assert result.structured_content == {"result": 42}
    assert text_of(result) == "42"


async def test_a_failed_task_is_a_tool_error(gateway: Any, client: httpx.AsyncClient) -> None:
    server = await gateway()

    async def drive() -> None:
        task = await created_task(client, server)
        failed = report(
            task["id"], "failed", curr="a", reason="RuntimeError",
            error=wire.error_details("RuntimeError", "the model is out of tokens"),
        )  # fmt: skip
        await post_reports(client, server, failed)

    async with connected(server) as session:
        result = await call_while(session.call_tool("anything", {"x": 1}), drive)
    assert result.is_error
    text = text_of(result)
    task_id = result.meta and result.meta[mcp_tools.TASK_ID_META]
    assert isinstance(task_id, str)
    assert f"task {task_id} failed (reason RuntimeError)" in text
    assert "RuntimeError: the model is out of tokens" in text


async def test_invalid_arguments_are_a_tool_error_naming_the_path_and_make_no_task(
    gateway: Any, client: httpx.AsyncClient
) -> None:
    server = await gateway()
    async with connected(server) as session:
        wrong_type = await session.call_tool("greet", {"name": 7})
        missing = await session.call_tool("greet", {})
        not_wrapped = await session.call_tool("count", {"n": 1})
    assert wrong_type.is_error
    assert "at $.name: 7 is not of type 'string'" in text_of(wrong_type)
    assert missing.is_error
    assert "'name' is a required property" in text_of(missing)
    assert not_wrapped.is_error
    assert "takes exactly one argument, 'payload'" in text_of(not_wrapped)
    assert await task_count(client, server) == 0


async def test_an_unknown_tool_is_a_tool_error_naming_the_tools(
    gateway: Any, client: httpx.AsyncClient
) -> None:
    server = await gateway()
    async with connected(server) as session:
        result = await session.call_tool("nope", {})
    assert result.is_error
    assert "no tool 'nope'" in text_of(result)
    assert "anything, count, greet, quick" in text_of(result)
    assert await task_count(client, server) == 0


async def test_a_task_that_outlives_the_flow_timeout_is_named_and_goes_on(
    gateway: Any, client: httpx.AsyncClient
) -> None:
    server = await gateway()
    async with connected(server) as session:
        result = await session.call_tool("quick", {})
    assert result.is_error
    task = await created_task(client, server)
    assert task["status"] == "pending"  # not canceled by the call giving up
    assert f"task {task['id']} is still pending" in text_of(result)
    assert "did not end within 0.3 s" in text_of(result)
    assert f"GET /v1/tasks/{task['id']}" in text_of(result)


async def test_a_flow_without_timeout_waits_the_door_bound(
    gateway: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mcp_tools, "UNTIMED_WAIT_S", 0.3)
    server = await gateway()

    async def drive() -> None:
        task = await created_task(client, server)
        await post_reports(client, server, report(task["id"], "received", curr="a"))

    async with connected(server) as session:
        result = await call_while(session.call_tool("anything", {}), drive)
    assert result.is_error
    task = await created_task(client, server)
    assert f"task {task['id']} is still running (it did not end within 0.3 s)" in text_of(result)


@pytest.mark.parametrize("era", ERAS)
async def test_a_call_whose_client_went_away_lets_go_of_its_task(
    gateway: Any, client: httpx.AsyncClient, era: str
) -> None:
    server = await gateway()
    idle = watchers(server)
    async with connected(server, era=era) as session:
        call = asyncio.create_task(session.call_tool("anything", {}))
        task = await followed_task(client, server, idle)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        if era == "discover":
            # Cancelling aborts the call's POST, and the server sees it at once.
            await eventually(lambda: watchers(server) == idle, "the call to stop following")
    # A handshake-era cancel is a notification no stateless replica can match to the call;
    # the closed connection ends it.
    await eventually(lambda: watchers(server) == idle, "the call to stop following")
    # The task itself is not canceled: another caller may follow it.
    response = await client.get(f"{server.url}/v1/tasks/{task['id']}")
    assert response.json()["status"] == "pending"


# ------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_a_request_without_a_valid_key_is_401(
    gateway: Any, client: httpx.AsyncClient, key: str | None
) -> None:
    server = await gateway(auth=True)
    # What the official client's first POST gets, in plain HTTP.
    response = await client.post(
        f"{server.url}/mcp",
        headers={**auth(key), "Accept": "application/json, text/event-stream"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    with pytest.raises(Exception) as raised:  # noqa: PT011  # see the assert below
        async with asyncio.timeout(TIMEOUT_S), connected(server, key):
            pass
    # The client turns a 401 without a JSON-RPC body into this error of its initialize().
    assert "MCPError: Server returned an error response" in _chain(raised.value)


def _chain(exc: BaseException) -> str:
    """Every message of an exception, its causes and (for groups) its parts."""
    parts = [f"{type(exc).__name__}: {exc}"]
    for inner in getattr(exc, "exceptions", ()):
        parts.append(_chain(inner))
    if exc.__cause__ is not None:
        parts.append(_chain(exc.__cause__))
    return " | ".join(parts)


async def test_the_task_belongs_to_the_tenant_of_the_key(
    gateway: Any, client: httpx.AsyncClient
) -> None:
    server = await gateway(auth=True)

    async def drive() -> None:
        task = await created_task(client, server, "acme-key")
        await post_reports(
            client, server, report(task["id"], "succeeded", curr="x-sink", result={})
        )

    async with connected(server, "acme-key") as session:
        result = await call_while(session.call_tool("anything", {"a": 1}), drive)
    assert not result.is_error
    task_id = result.meta and result.meta[mcp_tools.TASK_ID_META]
    own = await client.get(f"{server.url}/v1/tasks/{task_id}", headers=auth("acme-key"))
    assert own.status_code == 200
    assert own.json()["status"] == "succeeded"
    other = await client.get(f"{server.url}/v1/tasks/{task_id}", headers=auth("globex-key"))
    assert other.status_code == 404


# ------------------------------------------------------------------------------- transport


async def test_get_mcp_is_served_at_the_path_and_ends_cleanly_when_the_gateway_stops(
    gateway: Any, client: httpx.AsyncClient
) -> None:
    server = await gateway()
    url = f"{server.url}/mcp"
    async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200  # no redirect to /mcp/
        assert response.headers["content-type"].startswith("text/event-stream")
        server.stop()
        # Stateless: nothing is ever sent on it, and it ends (completely) with the gateway.
        async with asyncio.timeout(TIMEOUT_S):
            assert await response.aread() == b""


def test_progress_is_sent_only_when_it_rises() -> None:
    updates = [
        {"status": "pending", "actor": "a", "progress": 0.0},
        {"status": "running", "actor": "a", "progress": 0.0},
        {"status": "running", "actor": "a", "progress": 0.0},  # a retry at the same hop
        {"status": "paused", "actor": "b", "progress": 0.5},
        {"status": "running", "actor": "b", "progress": 0.5},  # resumed
        {"status": "failed", "actor": "b", "progress": 0.5},
    ]
    sent: list[tuple[float, str]] = []
    for data in updates:
        step = mcp_tools.progress_step(data, sent[-1][0] if sent else None)
        if step is not None:
            sent.append(step)
    assert sent == [(0.0, "running at a"), (0.5, "paused at b")]
