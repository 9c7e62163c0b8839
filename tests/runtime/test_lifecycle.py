"""Start-up order, health, the HTTP surface, and shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.waiting import wait_until

from .conftest import RuntimeFactory, envelope

# The HTTP surface is served by two engines that share one request loop: a thread per
# connection for sync handlers, asyncio for async ones. Each HTTP test runs on both.
ENGINES = pytest.mark.parametrize(
    "handler", ["kinds.echo", "kinds.async_echo"], ids=["threads", "asyncio"]
)


def connectable(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def test_ready_file_appears_only_once_the_socket_accepts(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("kinds.echo")

    assert runtime.ready_path.exists()
    assert connectable(runtime.socket_path)
    assert json.loads(runtime.ready_path.read_text())["handler"] == "kinds.echo"


def test_healthz_answers_ok(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("kinds.Model.predict")

    response = runtime.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "handler": "kinds.Model.predict"}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/invoke", 405), ("POST", "/healthz", 405), ("GET", "/nowhere", 404)],
)
def test_wrong_method_or_path(
    start_runtime: RuntimeFactory, method: str, path: str, status: int
) -> None:
    runtime = start_runtime("kinds.echo")

    response = runtime.client.request(method, path, content=b"{}")

    assert response.status_code == status
    assert response.json()["details"]["message"]


def raw_exchange(path: Path, data: bytes, *, responses: int) -> list[bytes]:
    """Send raw bytes on one connection and read `responses` Content-Length framed answers."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(20)
    conn.connect(str(path))
    conn.sendall(data)
    buffer = b""
    answers: list[bytes] = []
    while len(answers) < responses:
        while b"\r\n\r\n" not in buffer:
            chunk = conn.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buffer) < length:
            buffer += conn.recv(65536)
        answers.append(head + b"\r\n\r\n" + buffer[:length])
        buffer = buffer[length:]
    conn.close()
    return answers


def exchange_until_closed(path: Path, data: bytes) -> bytes:
    """Send raw bytes on one connection; everything the runtime sends before it closes it."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(20)  # a runtime that keeps the connection open fails here, not forever
    conn.connect(str(path))
    conn.sendall(data)
    received = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            # Linux reports the close this way when requests we sent were left unread.
            break
        if not chunk:
            break
        received += chunk
    conn.close()
    return received


def heads(answers: bytes) -> list[str]:
    """The status and header lines of each answer in a stream of Content-Length framed ones."""
    found: list[str] = []
    while answers:
        head, _, rest = answers.partition(b"\r\n\r\n")
        found.append(head.decode("latin-1"))
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answers = rest[length:]
    return found


def http_post(body: bytes, *, extra: str = "") -> bytes:
    return (
        f"POST /invoke HTTP/1.1\r\nHost: runtime\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


@ENGINES
def test_keep_alive_serves_pipelined_requests_on_one_connection(
    start_runtime: RuntimeFactory, handler: str
) -> None:
    runtime = start_runtime(handler)
    bodies = [json.dumps(envelope({"n": n})).encode() for n in range(3)]

    answers = raw_exchange(runtime.socket_path, b"".join(map(http_post, bodies)), responses=3)

    payloads = [json.loads(a.split(b"\r\n\r\n", 1)[1])["frames"][0]["payload"] for a in answers]
    assert payloads == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
    assert not any(b"Connection: close" in a for a in answers)


@ENGINES
def test_connection_close_is_answered_then_the_connection_ends(
    start_runtime: RuntimeFactory, handler: str
) -> None:
    runtime = start_runtime(handler)
    body = json.dumps(envelope({"last": True})).encode()
    # The second request must go unanswered: the first one asked to close the connection.
    data = http_post(body, extra="Connection: close\r\n") + http_post(body)

    answers = heads(exchange_until_closed(runtime.socket_path, data))

    assert len(answers) == 1
    assert answers[0].startswith("HTTP/1.1 200 OK\r\n")
    assert "\r\nConnection: close" in answers[0]
    assert runtime.invoke({"still": "up"}).status_code == 200


@ENGINES
@pytest.mark.parametrize(
    ("connection", "stays_open"), [("", False), ("Connection: keep-alive\r\n", True)]
)
def test_http_1_0_keeps_the_connection_only_when_asked(
    start_runtime: RuntimeFactory, handler: str, connection: str, stays_open: bool
) -> None:
    runtime = start_runtime(handler)
    body = json.dumps(envelope({"old": True})).encode()
    request = (
        f"POST /invoke HTTP/1.0\r\nContent-Length: {len(body)}\r\n{connection}\r\n"
    ).encode() + body
    # A closing request last, so that the runtime ends the connection either way.
    data = request + http_post(body, extra="Connection: close\r\n")

    answers = heads(exchange_until_closed(runtime.socket_path, data))

    assert len(answers) == (2 if stays_open else 1)
    assert ("Connection: close" in answers[0]) is not stays_open


@ENGINES
def test_chunked_request_body_is_accepted(start_runtime: RuntimeFactory, handler: str) -> None:
    runtime = start_runtime(handler)
    body = json.dumps(envelope({"chunked": True})).encode()
    half = len(body) // 2
    chunked = (
        b"POST /invoke HTTP/1.1\r\nHost: runtime\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{half:x}\r\n".encode()
        + body[:half]
        + b"\r\n"
        + f"{len(body) - half:x}\r\n".encode()
        + body[half:]
        + b"\r\n0\r\n\r\n"
    )

    (answer,) = raw_exchange(runtime.socket_path, chunked, responses=1)

    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["frames"][0]["payload"] == {"chunked": True}


@ENGINES
def test_malformed_http_gets_400_and_the_runtime_keeps_serving(
    start_runtime: RuntimeFactory, handler: str
) -> None:
    runtime = start_runtime(handler)
    body = json.dumps(envelope({})).encode()

    # The request after the malformed one is not read: the runtime answers and closes.
    answers = heads(
        exchange_until_closed(runtime.socket_path, b"NONSENSE\r\n\r\n" + http_post(body))
    )

    assert len(answers) == 1
    assert answers[0].startswith("HTTP/1.1 400 ")
    assert "\r\nConnection: close" in answers[0]
    assert runtime.invoke({"still": "up"}).status_code == 200


@ENGINES
def test_post_without_length_gets_411(start_runtime: RuntimeFactory, handler: str) -> None:
    runtime = start_runtime(handler)

    (answer,) = raw_exchange(
        runtime.socket_path, b"POST /invoke HTTP/1.1\r\nHost: r\r\n\r\n", responses=1
    )

    assert answer.startswith(b"HTTP/1.1 411 ")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_call_in_flight_then_cleans_up_and_exits_0(
    start_runtime: RuntimeFactory, socket_dir: Path, signum: int
) -> None:
    runtime = start_runtime("timing.gated")
    started, release = socket_dir / "started", socket_dir / "release"
    outcome: dict[str, Any] = {}

    def call() -> None:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(runtime.socket_path)),
            base_url="http://runtime",
            timeout=60,
        ) as client:
            payload = {"started": str(started), "release": str(release)}
            outcome["response"] = client.post("/invoke", json=envelope(payload))

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(started.exists, timeout=20, what="the handler to start")

    runtime.proc.send_signal(signum)
    # Stops accepting new connections while the call is still running...
    wait_until(
        lambda: not connectable(runtime.socket_path), timeout=20, what="the listener to close"
    )
    assert caller.is_alive()
    assert not runtime.ready_path.exists()
    # ...and still answers the call in flight once the handler returns.
    release.touch()
    caller.join(timeout=20)

    code, stderr = runtime.wait_exit()
    assert outcome["response"].status_code == 200
    assert outcome["response"].json()["frames"][0]["payload"] == {"finished": True}
    assert code == 0, stderr
    assert not runtime.socket_path.exists()
    assert not runtime.ready_path.exists()


@ENGINES
def test_idle_runtime_stops_promptly_with_open_keep_alive_connections(
    start_runtime: RuntimeFactory, handler: str
) -> None:
    runtime = start_runtime(handler)
    assert runtime.invoke({"warm": True}).status_code == 200  # leaves a keep-alive connection

    code, stderr = runtime.stop(signal.SIGTERM, timeout=10)

    assert code == 0, stderr
    assert "stopped" in stderr


def test_stale_socket_from_a_crashed_runtime_is_replaced(
    start_runtime: RuntimeFactory, socket_dir: Path
) -> None:
    first = start_runtime("kinds.echo")
    first.stop(signal.SIGKILL)
    assert first.socket_path.exists()  # SIGKILL leaves the socket file behind

    second = start_runtime("kinds.async_echo")

    assert second.invoke({"again": 1}).status_code == 200


def test_second_runtime_on_a_live_socket_refuses_to_start(start_runtime: RuntimeFactory) -> None:
    start_runtime("kinds.echo")

    second = start_runtime("kinds.echo", wait=False)

    assert second.proc.wait(timeout=20) == 4
    assert "another runtime is already serving" in second.stderr_text()
