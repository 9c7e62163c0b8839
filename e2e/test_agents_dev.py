"""The agent front doors of `asya dev`'s gateway with real handlers, each through its
official client: a flow called as an MCP tool runs its actors and answers their result (a
handler that raises makes a tool error); a flow run as an OpenAI model streams the tokens
its handler yields, live, and they add up to the answer; a flow run as an A2A skill streams
them as artifact updates and completes with the result."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import httpx2
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_data_parts
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent
from openai import AsyncOpenAI

from e2e.asya_dev import GREET_FLOW, TIMEOUT_S, Dev, actors, running_dev

pytestmark = pytest.mark.slow

ACTORS = actors(a="flow.mark_a", b="flow.mark_b", boom="flow.boom", speaker="flow.speak")
FLOWS = (
    "flows:\n"
    + GREET_FLOW
    + """\
  - name: explode
    route: [boom]
  - name: speak
    route: [speaker]
    description: Says the words back, one token at a time.
"""
)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("agents-dev")
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
    assert sorted(tool.name for tool in tools.tools) == ["explode", "greet", "speak"]
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


# -- OpenAI ----------------------------------------------------------------------------------


async def test_a_flow_as_an_openai_model_streams_its_tokens(dev: Dev) -> None:
    client = AsyncOpenAI(base_url=f"{dev.url}/v1", api_key="any: auth is off")
    said = "the pipeline answers in words"
    try:
        async with asyncio.timeout(TIMEOUT_S):
            models = [model.id async for model in client.models.list()]
            stream = await client.chat.completions.create(
                model="speak", messages=[{"role": "user", "content": said}], stream=True
            )
            deltas, finish = [], None
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    deltas.append(chunk.choices[0].delta.content)
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            whole = await client.chat.completions.create(
                model="speak", messages=[{"role": "user", "content": said}]
            )
    finally:
        await client.close()
    assert sorted(models) == ["explode", "greet", "speak"]
    # One delta per word the handler yielded: they came as tokens, not as one answer.
    assert deltas == [word + " " for word in said.split()]
    assert finish == "stop"
    assert whole.choices[0].message.content == "".join(deltas)


# -- A2A -------------------------------------------------------------------------------------


async def test_a_flow_as_an_a2a_skill_streams_and_completes(dev: Dev) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        card = await A2ACardResolver(http, dev.url).get_agent_card()
        client = ClientFactory(ClientConfig(streaming=True, httpx_client=http)).create(card)
        message = Message(message_id="m-1", role=Role.ROLE_USER, parts=[Part(text="hi there")])
        message.metadata.update({"skill": "speak"})
        async with asyncio.timeout(TIMEOUT_S):
            events = [
                event async for event in client.send_message(SendMessageRequest(message=message))
            ]
    assert sorted(skill.id for skill in card.skills) == ["explode", "greet", "speak"]
    tokens = [
        event.artifact_update.artifact.parts[0].text
        for event in events
        if event.HasField("artifact_update")
        and event.artifact_update.artifact.artifact_id == "stream"
    ]
    assert tokens == ["hi ", "there "]
    result = [
        get_data_parts(event.artifact_update.artifact.parts)[0]
        for event in events
        if event.HasField("artifact_update")
        and event.artifact_update.artifact.artifact_id == "result"
    ]
    assert result[0]["completion"] == "hi there "
    last = events[-1]
    assert last.HasField("status_update")
    assert last.status_update.status.state == TaskState.TASK_STATE_COMPLETED
