"""The MCP front door of `asya dev`'s gateway with real handlers, through the official `mcp`
client: a flow called as a tool runs its actors and answers their result; a handler that
raises makes a tool error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from e2e.asya_dev import TIMEOUT_S, Dev, running_dev

pytestmark = pytest.mark.slow

ACTORS = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: a}
spec: {handler: flow.mark_a}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: b}
spec: {handler: flow.mark_b}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: boom}
spec: {handler: flow.boom}
"""
FLOWS = """\
flows:
  - name: greet
    route: [a, b]
    description: Both marks, in order.
    input_schema:
      type: object
      required: [name]
      properties: {name: {type: string}}
  - name: explode
    route: [boom]
"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("mcp-dev")
    with running_dev(tmp, {"actors.yaml": ACTORS, "flows.yaml": FLOWS}) as running:
        yield running


@contextlib.asynccontextmanager
async def connected(dev: Dev) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=TIMEOUT_S) as http,
        streamable_http_client(f"{dev.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_a_flow_called_as_a_tool_runs_its_actors(dev: Dev) -> None:
    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        del progress, total
        messages.append(message)

    async with asyncio.timeout(TIMEOUT_S), connected(dev) as session:
        tools = await session.list_tools()
        result = await session.call_tool("greet", {"name": "Ada"}, progress_callback=on_progress)
    assert sorted(tool.name for tool in tools.tools) == ["explode", "greet"]
    assert not result.is_error, result.content
    assert result.structured_content == {"name": "Ada", "trail": ["a", "b"]}
    assert messages[-1] == "succeeded"


async def test_a_handler_that_raises_is_a_tool_error(dev: Dev) -> None:
    async with asyncio.timeout(TIMEOUT_S), connected(dev) as session:
        result = await session.call_tool("explode", {"x": 1})
    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert "failed" in block.text
    assert "BadInput: cannot handle {'x': 1}" in block.text, block.text
