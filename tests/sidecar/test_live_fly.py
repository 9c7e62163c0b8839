"""Live side events through a real sidecar process next to a real runtime (local transport).

A handler yields a FLY event and then waits for a file the test creates. The event must reach
both places a sidecar forwards side events to (ASYA_EVENTS_URL and the gateway's report
endpoint) while the handler still waits; once released, the result is routed as always,
reported after the events.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_sidecar.runtime_client import Frames, RuntimeClient, RuntimeTimeout, RuntimeUnavailable
from asya_transports.local import LocalTransport
from tests.support.events_endpoint import EventsEndpoint
from tests.support.report_receiver import ReportReceiver
from tests.support.runtime import RuntimeFactory, RuntimeProcess
from tests.support.services import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

QUEUE_A, QUEUE_B = "asya-default-a", "asya-default-b"
RELEASE_WAIT_S = 30

HANDLERS = f'''
"""Handlers for tests/sidecar/test_live_fly.py (written by the test)."""
import asyncio
import os
import time


def sync_tokens(payload):
    yield "FLY", {{"text": "Hel"}}
    deadline = time.monotonic() + {RELEASE_WAIT_S}
    while not os.path.exists(payload["release"]):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    yield "FLY", {{"text": "lo"}}
    yield {{"text": "Hello"}}


async def async_tokens(payload):
    yield "FLY", {{"text": "Hel"}}
    deadline = time.monotonic() + {RELEASE_WAIT_S}
    while not os.path.exists(payload["release"]):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        await asyncio.sleep(0.01)
    yield "FLY", {{"text": "lo"}}
    yield {{"text": "Hello"}}
'''


@pytest.fixture
def events_endpoint() -> Iterator[EventsEndpoint]:
    endpoint = EventsEndpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def receiver() -> Iterator[ReportReceiver]:
    with ReportReceiver() as running:
        yield running


@pytest.fixture
async def queues(tmp_path: Path) -> AsyncIterator[LocalTransport]:
    transport = LocalTransport(tmp_path / "state")
    async with transport:
        for actor in ("a", "b", "x-sink", "x-sump"):
            await transport.ensure_queue(f"asya-default-{actor}")
        yield transport


@pytest.fixture
def sidecar(
    tmp_path: Path,
    socket_dir: Path,
    events_endpoint: EventsEndpoint,
    receiver: ReportReceiver,
    queues: LocalTransport,
) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    env.update(
        {
            "ASYA_ACTOR": "a",
            "ASYA_TRANSPORT": "local",
            "ASYA_STATE_DIR": str(tmp_path / "state"),
            "ASYA_SOCKET_DIR": str(socket_dir),
            "ASYA_METRICS_HOST": "127.0.0.1",
            "ASYA_METRICS_PORT": str(free_port()),
            "ASYA_LOG_FORMAT": "json",
            "ASYA_EVENTS_URL": events_endpoint.url,
            "ASYA_GATEWAY_URL": receiver.url,
            # A short interval, so that a report posted while the handler waits is seen soon.
            "ASYA_GATEWAY_REPORT_INTERVAL": "50ms",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "asya_sidecar"], env=env, stderr=subprocess.PIPE, text=True
    )
    yield proc
    proc.kill()
    proc.wait()


async def routed_to_b(queues: LocalTransport) -> dict[str, Any]:
    await eventually(
        lambda: queues.queue_depth(QUEUE_B), what="the result to be routed to b", timeout=30
    )
    receiving = queues.receive(QUEUE_B, prefetch=1)
    try:
        delivery = await asyncio.wait_for(anext(receiving), timeout=30)
        await delivery.ack()
    finally:
        await receiving.aclose()
    routed: dict[str, Any] = json.loads(delivery.body)
    return routed


@pytest.mark.parametrize("handler", ["sync_tokens", "async_tokens"])
async def test_side_events_are_forwarded_while_the_handler_still_runs(
    start_runtime: RuntimeFactory,
    tmp_path: Path,
    sidecar: subprocess.Popen[str],
    events_endpoint: EventsEndpoint,
    receiver: ReportReceiver,
    queues: LocalTransport,
    handler: str,
) -> None:
    handlers_dir = tmp_path / "handlers"
    handlers_dir.mkdir()
    (handlers_dir / "live_sidecar_handlers.py").write_text(HANDLERS)
    start_runtime(f"live_sidecar_handlers.{handler}", cwd=handlers_dir)
    release = tmp_path / "release"
    envelope = {
        "id": "live-1",
        "route": {"prev": [], "curr": "a", "next": ["b"]},
        "headers": {},
        "payload": {"release": str(release)},
    }

    await queues.send(QUEUE_A, json.dumps(envelope).encode())
    await eventually(
        lambda: events_endpoint.events() == [{"text": "Hel"}],
        what="the first event at ASYA_EVENTS_URL while the handler waits",
    )
    await eventually(
        lambda: ("a", "fly") in receiver.events("live-1"),
        what="the first event reported to the gateway while the handler waits",
        details=lambda: f"reports: {receiver.events('live-1')}",
    )
    # Still under way: nothing routed, nothing reported as done.
    assert await queues.queue_depth(QUEUE_B) == 0
    assert ("a", "routed") not in receiver.events("live-1")
    release.write_text("go")

    routed = await routed_to_b(queues)
    assert routed["payload"] == {"text": "Hello"}
    assert routed["route"]["curr"] == "b"
    await eventually(
        lambda: ("a", "routed") in receiver.events("live-1"),
        what="the routed report",
        details=lambda: f"reports: {receiver.events('live-1')}",
    )
    assert events_endpoint.events() == [{"text": "Hel"}, {"text": "lo"}]
    reports = receiver.about("live-1")
    fly = [event for r in reports if r["event"] == "fly" for event in r["events"]]
    assert fly == [{"text": "Hel"}, {"text": "lo"}]
    kinds = [r["event"] for r in reports]
    # Every side event is reported before the hop's outcome.
    assert max(i for i, kind in enumerate(kinds) if kind == "fly") < kinds.index("routed")


# -- the runtime client alone, against a real runtime


@pytest.fixture
def tokens_runtime(start_runtime: RuntimeFactory, tmp_path: Path) -> RuntimeProcess:
    handlers_dir = tmp_path / "handlers"
    handlers_dir.mkdir()
    (handlers_dir / "live_sidecar_handlers.py").write_text(HANDLERS)
    return start_runtime("live_sidecar_handlers.sync_tokens", cwd=handlers_dir)


def tokens_envelope(release: Path) -> bytes:
    return json.dumps(
        {
            "id": "client-1",
            "route": {"prev": [], "curr": "a", "next": ["b"]},
            "headers": {},
            "payload": {"release": str(release)},
        }
    ).encode()


async def test_the_client_hands_each_fly_line_on_before_the_call_returns(
    tokens_runtime: RuntimeProcess, tmp_path: Path
) -> None:
    client = RuntimeClient(str(tokens_runtime.socket_path))
    release = tmp_path / "release"
    received: list[list[Any]] = []
    try:
        call = asyncio.create_task(
            client.invoke(tokens_envelope(release), timeout=30, on_fly=received.append)
        )
        await eventually(lambda: received, what="the first fly line")
        assert not call.done()
        assert received == [[{"text": "Hel"}]]
        release.write_text("go")
        result = await call
        # The connection went back to the pool in a state fit for the next call.
        again = await client.invoke(tokens_envelope(release), timeout=30, on_fly=received.append)
    finally:
        await client.close()

    assert isinstance(result, Frames)
    assert [frame["payload"] for frame in result.frames] == [{"text": "Hello"}]
    assert result.fly == []  # already handed on, not repeated
    assert isinstance(again, Frames)
    assert [event for batch in received for event in batch] == [{"text": "Hel"}, {"text": "lo"}] * 2


async def test_without_a_callback_the_events_come_with_the_result(
    tokens_runtime: RuntimeProcess, tmp_path: Path
) -> None:
    client = RuntimeClient(str(tokens_runtime.socket_path))
    release = tmp_path / "release"
    release.write_text("go")
    try:
        result = await client.invoke(tokens_envelope(release), timeout=30)
    finally:
        await client.close()

    assert isinstance(result, Frames)
    assert result.fly == [{"text": "Hel"}, {"text": "lo"}]


async def test_a_stream_cut_short_is_runtime_unavailable_during_the_call(
    tokens_runtime: RuntimeProcess, tmp_path: Path
) -> None:
    client = RuntimeClient(str(tokens_runtime.socket_path))
    received: list[list[Any]] = []
    try:
        call = asyncio.create_task(
            client.invoke(tokens_envelope(tmp_path / "never"), timeout=30, on_fly=received.append)
        )
        await eventually(lambda: received, what="the first fly line")
        tokens_runtime.proc.send_signal(signal.SIGKILL)  # the runtime dies mid-stream
        with pytest.raises(RuntimeUnavailable) as raised:
            await call
    finally:
        await client.close()

    assert raised.value.during_call


async def test_the_timeout_backstop_covers_the_whole_stream(
    tokens_runtime: RuntimeProcess, tmp_path: Path
) -> None:
    client = RuntimeClient(str(tokens_runtime.socket_path), backstop_grace=0.5)
    received: list[list[Any]] = []
    try:
        call = asyncio.create_task(
            client.invoke(tokens_envelope(tmp_path / "never"), timeout=1, on_fly=received.append)
        )
        await eventually(lambda: received, what="the first fly line")
        # Frozen, the runtime cannot even answer its own timeout: only the backstop ends it.
        tokens_runtime.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(RuntimeTimeout):
                await call
        finally:
            tokens_runtime.proc.send_signal(signal.SIGCONT)
    finally:
        await client.close()
