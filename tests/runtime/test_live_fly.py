"""Live side events (X-Asya-Fly: live) against a real runtime process, both serving engines.

The handlers yield a FLY event, then wait for a file the test creates: the first ndjson line
must reach the test while the handler still waits, which is the point of streaming.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import RuntimeFactory, RuntimeProcess, envelope

LIVE = {"X-Asya-Fly": "live"}
# How long a handler waits for the test to release it: only a broken runtime waits this long.
RELEASE_WAIT_S = 20

HANDLERS = f'''
"""Handlers for tests/runtime/test_live_fly.py (written by the test)."""
import asyncio
import os
import time

RELEASE_WAIT_S = {RELEASE_WAIT_S}


def _released(path):
    deadline = time.monotonic() + RELEASE_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path + " never appeared")
        time.sleep(0.01)


async def _areleased(path):
    deadline = time.monotonic() + RELEASE_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path + " never appeared")
        await asyncio.sleep(0.01)


async def async_tokens(payload):
    yield "FLY", {{"type": "token", "text": "Hel"}}
    await _areleased(payload["release"])
    yield "FLY", {{"type": "token", "text": "lo"}}
    yield {{"text": "Hello"}}


def sync_tokens(payload):
    yield "FLY", {{"type": "token", "text": "Hel"}}
    _released(payload["release"])
    yield "FLY", {{"type": "token", "text": "lo"}}
    yield {{"text": "Hello"}}


async def async_burst(payload):
    for i in range(3):
        yield "FLY", {{"i": i}}
    yield payload


def sync_fails_after_fly(payload):
    yield "FLY", {{"step": 1}}
    raise ValueError("the model went away")


async def async_fails_after_fly(payload):
    yield "FLY", {{"step": 1}}
    raise ValueError("the model went away")


def sync_nan_after_fly(payload):
    yield "FLY", {{"step": 1}}
    yield {{"score": float("nan")}}


async def async_bad_event_after_fly(payload):
    yield "FLY", {{"step": 1}}
    yield "FLY", {{"not", "json"}}
    yield payload


def sync_parks_after_fly(payload):
    yield "FLY", {{"step": 1}}
    yield "PARK", {{"job": "j-1"}}


async def async_only_fly(payload):
    yield "FLY", {{"step": 1}}


def sync_stuck_after_fly(payload):
    yield "FLY", {{"step": 1}}
    _released(payload["release"])
    yield payload


async def async_stuck_after_fly(payload):
    yield "FLY", {{"step": 1}}
    await _areleased(payload["release"])
    yield payload


def sync_plain(payload):
    yield {{"echo": payload}}


async def async_plain(payload):
    return {{"echo": payload}}
'''


@pytest.fixture
def handlers_dir(tmp_path: Path) -> Path:
    (tmp_path / "live_handlers.py").write_text(HANDLERS)
    return tmp_path


@pytest.fixture
def start(start_runtime: RuntimeFactory, handlers_dir: Path) -> RuntimeFactory:
    def starter(name: str, **kwargs: Any) -> RuntimeProcess:
        return start_runtime(f"live_handlers.{name}", cwd=handlers_dir, **kwargs)

    return starter


def lines_of(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def fly_events(lines: list[dict[str, Any]]) -> list[Any]:
    return [event for line in lines if "fly" in line for event in line["fly"]]


@pytest.mark.parametrize("handler", ["async_tokens", "sync_tokens"])
def test_first_fly_line_arrives_while_the_handler_still_runs(
    start: RuntimeFactory, tmp_path: Path, handler: str
) -> None:
    runtime = start(handler)
    release = tmp_path / "release"
    sent = envelope({"release": str(release)})

    with runtime.client.stream("POST", "/invoke", json=sent, headers=LIVE) as response:
        lines = lines_of(response)
        first = next(lines)
        # Only now may the handler go on: if the runtime held the event back, `first` would
        # have been the final line after the handler gave up waiting.
        release.write_text("go")
        rest = list(lines)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["transfer-encoding"] == "chunked"
    assert first == {"fly": [{"type": "token", "text": "Hel"}]}
    assert fly_events(rest[:-1]) == [{"type": "token", "text": "lo"}]
    final = rest[-1]
    assert final == {
        "answer": {
            "status": 200,
            "body": {
                "frames": [
                    {
                        "payload": {"text": "Hello"},
                        "route": sent["route"],
                        "headers": sent["headers"],
                    }
                ]
            },
        }
    }


@pytest.mark.parametrize("handler", ["async_tokens", "sync_tokens"])
def test_without_the_header_the_events_come_with_the_answer(
    start: RuntimeFactory, tmp_path: Path, handler: str
) -> None:
    runtime = start(handler)
    release = tmp_path / "release"
    release.write_text("go")

    response = runtime.invoke({"release": str(release)})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "transfer-encoding" not in response.headers
    body = response.json()
    assert body["fly"] == [{"type": "token", "text": "Hel"}, {"type": "token", "text": "lo"}]
    assert [frame["payload"] for frame in body["frames"]] == [{"text": "Hello"}]


def test_events_yielded_without_awaiting_share_one_line(start: RuntimeFactory) -> None:
    runtime = start("async_burst")

    with runtime.client.stream(
        "POST", "/invoke", json=envelope({"n": 1}), headers=LIVE
    ) as response:
        lines = list(lines_of(response))

    assert lines[0] == {"fly": [{"i": 0}, {"i": 1}, {"i": 2}]}
    assert [f["payload"] for f in lines[1]["answer"]["body"]["frames"]] == [{"n": 1}]
    assert len(lines) == 2


@pytest.mark.parametrize("handler", ["sync_fails_after_fly", "async_fails_after_fly"])
def test_an_error_after_a_fly_is_the_final_line(start: RuntimeFactory, handler: str) -> None:
    runtime = start(handler)

    with runtime.client.stream("POST", "/invoke", json=envelope({}), headers=LIVE) as response:
        lines = list(lines_of(response))

    assert lines[0] == {"fly": [{"step": 1}]}
    answer = lines[-1]["answer"]
    assert answer["status"] == 500
    assert answer["body"]["error"] == "processing_error"
    details = answer["body"]["details"]
    assert details["type"] == "ValueError"
    assert details["message"] == "the model went away"
    assert "ValueError" in details["mro"]
    assert "the model went away" in details["traceback"]


def test_a_result_that_is_not_json_after_a_fly_is_a_500_final_line(
    start: RuntimeFactory,
) -> None:
    runtime = start("sync_nan_after_fly")

    with runtime.client.stream("POST", "/invoke", json=envelope({}), headers=LIVE) as response:
        lines = list(lines_of(response))

    answer = lines[-1]["answer"]
    assert answer["status"] == 500
    assert answer["body"]["details"]["type"] == "ResultError"
    assert "NaN or infinite" in answer["body"]["details"]["message"]


def test_an_event_that_is_not_json_fails_the_call_at_its_yield(start: RuntimeFactory) -> None:
    runtime = start("async_bad_event_after_fly")

    with runtime.client.stream("POST", "/invoke", json=envelope({}), headers=LIVE) as response:
        lines = list(lines_of(response))

    assert fly_events(lines) == [{"step": 1}]
    answer = lines[-1]["answer"]
    assert answer["status"] == 500
    assert answer["body"]["details"]["type"] == "ResultError"
    assert "FLY event is not JSON" in answer["body"]["details"]["message"]


def test_parked_and_empty_answers_keep_their_shape(start: RuntimeFactory) -> None:
    parks = start("sync_parks_after_fly")
    with parks.client.stream("POST", "/invoke", json=envelope({}), headers=LIVE) as response:
        parked = list(lines_of(response))
    parks.stop()
    only_fly = start("async_only_fly")
    with only_fly.client.stream("POST", "/invoke", json=envelope({}), headers=LIVE) as response:
        empty = list(lines_of(response))

    assert parked[-1] == {
        "answer": {"status": 200, "body": {"frames": [], "parked": {"job": "j-1"}}}
    }
    # Every event went out live, so nothing is left to answer: the final line says 204.
    assert empty == [{"fly": [{"step": 1}]}, {"answer": {"status": 204, "body": None}}]


@pytest.mark.parametrize("handler", ["sync_plain", "async_plain"])
def test_a_handler_without_fly_gets_the_ordinary_answer(
    start: RuntimeFactory, handler: str
) -> None:
    runtime = start(handler)

    response = runtime.client.post("/invoke", json=envelope({"x": 1}), headers=LIVE)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.json()["frames"][0]["payload"] == {"echo": {"x": 1}}


@pytest.mark.parametrize(
    ("handler", "exit_code"), [("async_stuck_after_fly", None), ("sync_stuck_after_fly", 75)]
)
def test_a_timeout_after_a_fly_ends_the_stream(
    start: RuntimeFactory, tmp_path: Path, handler: str, exit_code: int | None
) -> None:
    runtime = start(handler)
    sent = envelope({"release": str(tmp_path / "never")})
    headers = {**LIVE, "X-Asya-Timeout": "0.5"}

    with runtime.client.stream("POST", "/invoke", json=sent, headers=headers) as response:
        lines = list(lines_of(response))

    assert lines[0] == {"fly": [{"step": 1}]}
    answer = lines[-1]["answer"]
    assert answer["status"] == 500
    assert answer["body"]["details"]["type"] == "ActorTimeout"
    if exit_code is not None:
        # A sync handler's thread cannot be stopped: the runtime exits to be restarted.
        assert runtime.wait_exit()[0] == exit_code


def read_answer(sock: socket.socket, buffer: bytearray) -> tuple[bytes, bytes]:
    """One chunked answer off a raw socket: (head, body with chunk framing removed)."""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    body = b""
    while True:
        while b"\r\n" not in buffer:
            buffer += sock.recv(65536)
        line_end = buffer.index(b"\r\n")
        size = int(buffer[:line_end], 16)
        while len(buffer) < line_end + 2 + size + 2:
            buffer += sock.recv(65536)
        body += bytes(buffer[line_end + 2 : line_end + 2 + size])
        assert buffer[line_end + 2 + size : line_end + 4 + size] == b"\r\n"
        del buffer[: line_end + 4 + size]
        if size == 0:
            return head, body


@pytest.mark.parametrize("handler", ["async_fails_after_fly", "sync_fails_after_fly"])
def test_the_connection_serves_the_next_request_after_a_stream(
    start: RuntimeFactory, handler: str
) -> None:
    runtime = start(handler)
    data = json.dumps(envelope({})).encode()
    request = (
        b"POST /invoke HTTP/1.1\r\nHost: runtime\r\nX-Asya-Fly: live\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data) + data
    )
    buffer = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(runtime.socket_path))
        answers = []
        for _ in range(2):
            sock.sendall(request)
            answers.append(read_answer(sock, buffer))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: runtime\r\n\r\n")
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)

    for head, body in answers:
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Type: application/x-ndjson\r\n" in head
        assert b"Transfer-Encoding: chunked\r\n" in head
        assert b"Content-Length" not in head
        lines = [json.loads(line) for line in body.splitlines()]
        assert lines[0] == {"fly": [{"step": 1}]}
        assert lines[-1]["answer"]["status"] == 500
        assert body.endswith(b"\n")
    assert bytes(buffer).startswith(b"HTTP/1.1 200 OK\r\n")
