"""The front doors mounted on the public port next to the tasks API: each is a module with
`front_door(gateway) -> FrontDoor` (its routes, and what it must run while the app serves).

    openai_api.py   GET /v1/models, POST /v1/chat/completions   flows as OpenAI models
    a2a_agent.py    /.well-known/agent-card.json, /a2a         flows as A2A skills
    mcp_tools.py    /mcp (Streamable HTTP)                      flows as MCP tools

All of them act on tasks through service.Gateway only, so they share its store, keys,
tenants and flows with the REST API.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from importlib import metadata

from starlette.routing import BaseRoute

__all__ = ["FrontDoor", "asya_version", "running"]


@dataclass(frozen=True)
class FrontDoor:
    routes: Sequence[BaseRoute]
    # Entered when the app starts serving and left when it stops (an SDK's session
    # manager, say); None when the door needs nothing running.
    lifespan: Callable[[], AbstractAsyncContextManager[None]] | None = field(default=None)


@contextlib.asynccontextmanager
async def running(doors: Sequence[FrontDoor]) -> AsyncIterator[None]:
    """Every door's lifespan entered, in order; left in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        for door in doors:
            if door.lifespan is not None:
                await stack.enter_async_context(door.lifespan())
        yield


def asya_version(fallback: str) -> str:
    """The installed asya's version, which the doors announce (MCP server info, A2A card);
    `fallback` when run from a source tree that is not installed."""
    try:
        return metadata.version("asya")
    except metadata.PackageNotFoundError:
        return fallback
