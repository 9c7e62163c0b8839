"""BoundedStreamingResponse: the answer ends when the client takes nothing for
send_timeout, and what the body holds is released however the answer ends (ASGI driven
directly: these are its decisions, the uvicorn-served cases are in test_stream_bounds.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from asya_gateway.streaming import BoundedStreamingResponse

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.4"}, "path": "/x"}


class Body:
    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.closed = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        try:
            for _ in range(3):
                yield b"data: 1\n\n"
            self.finished = True
        finally:
            self.closed += 1

    async def close(self) -> None:
        self.closed += 1


async def receive() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {}  # never reached


async def test_a_client_that_takes_nothing_ends_the_answer_and_releases_the_body() -> None:
    body = Body()
    sent: list[Message] = []

    async def stuck_after_headers(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # a full socket: the write never completes

    response = BoundedStreamingResponse(body.chunks(), send_timeout=0.05, on_close=body.close)
    await asyncio.wait_for(response(SCOPE, receive, stuck_after_headers), timeout=10)

    assert sent[0]["type"] == "http.response.start"
    assert not body.finished
    assert body.closed == 2  # the generator's own finally, then on_close


async def test_on_close_runs_when_the_body_never_started() -> None:
    body = Body()

    async def gone(message: Message) -> None:
        raise OSError("the client went away")

    response = BoundedStreamingResponse(body.chunks(), send_timeout=5, on_close=body.close)
    with pytest.raises(ClientDisconnect):
        await response(SCOPE, receive, gone)

    assert not body.started
    assert body.closed == 1  # on_close: the generator never ran, so its finally did not


async def test_a_reading_client_gets_the_whole_answer() -> None:
    body = Body()
    sent: list[Message] = []

    async def reads(message: Message) -> None:
        sent.append(message)

    response = BoundedStreamingResponse(body.chunks(), send_timeout=5, on_close=body.close)
    await response(SCOPE, receive, reads)

    assert body.finished
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n"] * 3 + [b""]
    assert sent[-1]["more_body"] is False
    headers = dict(sent[0]["headers"])
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"content-type"].startswith(b"text/event-stream")
