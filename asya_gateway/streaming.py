"""Streamed HTTP answers (SSE) that cannot be held open by a client that stops reading.

A client that stops reading fills its socket buffers; from then on every write waits. A
chunk the client has not taken within `send_timeout` seconds ends the answer: the
connection is closed and the body's iterator closed, so whatever it holds (a task stream,
its subscription) is released. The task itself goes on; the client can follow it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

__all__ = ["SEND_TIMEOUT_S", "SSE_HEADERS", "BoundedStreamingResponse"]

log = logging.getLogger("asya.gateway")

SEND_TIMEOUT_S = 30.0
# No proxy may buffer or cache a live stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _SlowReader(Exception):
    pass


class BoundedStreamingResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        send_timeout: float = SEND_TIMEOUT_S,
        media_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(
            content,
            status_code=status_code,
            headers={**SSE_HEADERS, **(headers or {})},
            media_type=media_type,
        )
        self._content = content
        # Runs however the answer ends, even when its body was never started (the client
        # left before the first byte): what the body would have released in its `finally`.
        self._on_close = on_close
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError:
                raise _SlowReader from None

        try:
            await super().__call__(scope, receive, bounded_send)
        except* _SlowReader:
            # Returning without finishing the answer makes the server close the connection.
            log.warning(
                "%s: the client took nothing for %gs; its stream is closed",
                scope.get("path", "?"),
                self.send_timeout,
            )
        finally:
            closing = getattr(self._content, "aclose", None)
            if closing is not None:
                await closing()
            if self._on_close is not None:
                await self._on_close()
