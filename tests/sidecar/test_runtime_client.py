"""runtime_client.py against a real runtime subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from asya_shared import wire
from asya_sidecar import runtime_client
from asya_sidecar.runtime_client import (
    Frames,
    HandlerError,
    NoResult,
    Parked,
    Refused,
    RuntimeClient,
    RuntimeTimeout,
    RuntimeUnavailable,
)
from tests.support.runtime import RuntimeFactory, envelope
from tests.support.waiting import wait_until


def body(payload: object) -> bytes:
    return json.dumps(envelope(payload)).encode()


async def test_answers_become_typed_results(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("results.fan_out")
    client = RuntimeClient(str(runtime.socket_path))

    result = await client.invoke(body({"n": 2}), timeout=10)

    assert isinstance(result, Frames)
    assert [f["payload"] for f in result.frames] == [{"part": 0}, {"part": 1}]
    assert await client.healthy()
    await client.close()


async def test_no_result(start_runtime: RuntimeFactory) -> None:
    nothing = RuntimeClient(str(start_runtime("results.nothing").socket_path))
    assert isinstance(await nothing.invoke(body({}), timeout=10), NoResult)
    await nothing.close()


async def test_handler_error_details(start_runtime: RuntimeFactory) -> None:
    client = RuntimeClient(str(start_runtime("failing.quota").socket_path))

    result = await client.invoke(body({"model": "m"}), timeout=10)

    assert isinstance(result, HandlerError)
    assert result.details["type"] == "failing.QuotaError"
    # What the runtime sends is already whole: parsing it keeps every key, in wire order.
    assert list(result.details) == ["type", "mro", "message", "traceback"]
    assert result.details["mro"][0] == "failing.QuotaError"
    assert "QuotaError" in (result.details["traceback"] or "")
    await client.close()


async def test_missing_runtime_is_unavailable_not_during_a_call(socket_dir: Path) -> None:
    client = RuntimeClient(str(socket_dir / "asya-runtime.sock"))

    with pytest.raises(RuntimeUnavailable) as caught:
        await client.invoke(body({}), timeout=5)

    assert not caught.value.during_call
    assert not await client.healthy()


async def test_the_runtime_enforces_the_timeout_it_is_sent(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("timing.async_sleep")
    client = RuntimeClient(str(runtime.socket_path))

    result = await client.invoke(body({"sleep_s": 30}), timeout=0.5)

    assert isinstance(result, HandlerError)
    assert result.details["type"] == "ActorTimeout"
    await client.close()


async def test_a_frozen_runtime_is_given_up_on_after_the_backstop(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("kinds.echo")
    client = RuntimeClient(str(runtime.socket_path), backstop_grace=0.5)
    runtime.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        with pytest.raises(RuntimeTimeout, match=r"within 1s"):
            await client.invoke(body({}), timeout=0.5)
    finally:
        runtime.proc.send_signal(signal.SIGCONT)
    await client.close()


async def test_runtime_killed_during_a_call(
    start_runtime: RuntimeFactory, socket_dir: Path
) -> None:
    runtime = start_runtime("timing.gated")
    client = RuntimeClient(str(runtime.socket_path))
    started = socket_dir / "started"
    payload = {"started": str(started), "release": str(socket_dir / "never")}

    call = asyncio.create_task(client.invoke(body(payload), timeout=30))
    await asyncio.to_thread(wait_until, started.exists, timeout=20, what="the handler to start")
    runtime.proc.send_signal(signal.SIGKILL)

    with pytest.raises(RuntimeUnavailable) as caught:
        await call
    assert caught.value.during_call
    await client.close()


async def test_a_restarted_runtime_is_reached_through_stale_pooled_connections(
    start_runtime: RuntimeFactory,
) -> None:
    first = start_runtime("kinds.echo", concurrency=4)
    client = RuntimeClient(str(first.socket_path))
    await asyncio.gather(*(client.invoke(body({"i": i}), timeout=10) for i in range(4)))
    first.stop()  # leaves four idle keep-alive connections that now lead nowhere

    start_runtime("kinds.echo")
    result = await client.invoke(body({"after": "restart"}), timeout=10)

    assert isinstance(result, Frames)
    assert result.frames[0]["payload"] == {"after": "restart"}
    await client.close()


@pytest.mark.parametrize(
    ("status", "raw", "expected"),
    [
        (204, b"", NoResult()),
        (200, b'{"frames": []}', NoResult()),
        (200, b'{"frames": [], "fly": [1]}', Frames([], [1])),
        (200, b'{"frames": [], "parked": {"job": "j"}}', Parked({"job": "j"})),
        (200, b'{"frames": [], "parked": null, "fly": [2]}', Parked(None, [2])),
        (
            200,
            b'{"frames": [{"payload": 1}], "parked": 1}',
            Refused("the runtime answered a parked call with frames"),
        ),
        (200, b'{"frames": "x"}', Refused("the runtime answered 200 without a list of frames")),
        (200, b"not json", Refused("the runtime answered 200 with a body that is not JSON")),
        (
            500,
            b'{"error": "processing_error", "details": {"type": "E"}}',
            HandlerError({"type": "E", "mro": ["E"], "message": "", "traceback": None}),
        ),
        (
            400,
            b'{"error": "msg_parsing_error", "details": {"message": "bad"}}',
            Refused("the runtime refused the envelope (400): bad"),
        ),
        (
            503,
            b'{"status": "draining"}',
            Refused("the runtime refused the envelope (503): HTTP 503"),
        ),
    ],
)
def test_interpretation_of_answers(status: int, raw: bytes, expected: object) -> None:
    assert runtime_client._interpret(status, raw) == expected


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (
            {"type": "a.E", "mro": ["a.E", "Exception"], "message": "m", "traceback": "T"},
            wire.error_details("a.E", "m", mro=["a.E", "Exception"], traceback="T"),
        ),
        # A missing or unusable mro falls back to the type alone, as rule matching always did.
        ({"type": "E", "mro": []}, wire.error_details("E", "")),
        ({"type": "E", "mro": 5}, wire.error_details("E", "")),
        ({"type": "E", "mro": "E"}, wire.error_details("E", "")),
        ({"mro": ["E", 1, None]}, wire.error_details("", "", mro=["E", "1", ""])),
        ({"message": None, "traceback": None}, wire.error_details("", "")),
        (
            {"type": 7, "message": ["m"], "traceback": 3},
            wire.error_details("7", "['m']", traceback="3"),
        ),
        ({"type": "E", "extra": 1}, wire.error_details("E", "")),
        ({}, wire.error_details("", "")),
        ([1, 2], wire.error_details("", "")),
        ("boom", wire.error_details("", "")),
        (None, wire.error_details("", "")),
    ],
)
def test_odd_handler_error_details_are_made_safe_at_the_edge(
    details: object, expected: wire.ErrorDetails
) -> None:
    raw = json.dumps({"error": "processing_error", "details": details}).encode()

    result = runtime_client._interpret(500, raw)

    assert result == HandlerError(expected)


def test_a_processing_error_without_details_is_still_a_handler_error() -> None:
    result = runtime_client._interpret(500, b'{"error": "processing_error"}')

    assert result == HandlerError(wire.error_details("", ""))
