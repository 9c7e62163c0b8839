"""The sidecar's side of the runtime protocol: HTTP/1.1 over the runtime's Unix socket.

It speaks only what the runtime serves (docs/runtime-protocol.md): requests with a
Content-Length body, answers framed by Content-Length, connections kept alive and reused.
We do not use a general-purpose client here because every envelope pays this cost on every
hop: against the same runtime, httpx managed about 1,300 calls/s and this kind of minimal
client about 8,000 (bench/runtime_invoke.py, sync echo, one connection).

Answers are turned into typed results; failures to talk to the runtime at all become
RuntimeUnavailable, so the caller can requeue instead of failing the envelope.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from asya_shared import wire
from asya_sidecar import codec

# How many idle connections to keep; a busy sidecar needs one per envelope in flight.
DEFAULT_POOL = 16
# The runtime enforces the timeout it is sent; we wait this much longer before giving up
# on a runtime that cannot even answer (wedged in native code, say).
BACKSTOP_GRACE_S = 5.0


class RuntimeUnavailable(Exception):
    """The runtime cannot be reached, or dropped the connection before answering.

    `during_call` is True when the request had reached the runtime: the handler may have
    been running when the runtime died (a crash or an out-of-memory kill).
    """

    def __init__(self, message: str, *, during_call: bool = False) -> None:
        super().__init__(message)
        self.during_call = during_call


class RuntimeTimeout(Exception):
    """The runtime did not answer within the actor timeout."""


@dataclass(frozen=True)
class Frames:
    frames: list[wire.Frame]  # as the runtime sent them: envelope.check_frame checks each
    fly: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class NoResult:
    """204: the handler returned None (or produced no frames)."""


@dataclass(frozen=True)
class Parked:
    """200 with "parked": the handler ended the call with `yield "PARK", note`; the envelope
    goes nowhere from this actor (something outside the pipeline continues it later)."""

    note: Any
    fly: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class HandlerError:
    """500 processing_error: the handler raised, as the runtime described it (made safe)."""

    details: wire.ErrorDetails


@dataclass(frozen=True)
class Refused:
    """400 msg_parsing_error, or an answer the sidecar cannot read."""

    message: str


Result = Frames | NoResult | Parked | HandlerError | Refused


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False

    def close(self) -> None:
        self.writer.close()


class RuntimeClient:
    def __init__(
        self,
        socket_path: str,
        *,
        pool_size: int = DEFAULT_POOL,
        backstop_grace: float = BACKSTOP_GRACE_S,
    ) -> None:
        self.socket_path = socket_path
        self._pool_size = pool_size
        self._backstop_grace = backstop_grace
        self._idle: list[_Connection] = []

    async def invoke(self, envelope: bytes, *, timeout: float) -> Result:
        """POST /invoke, asking the runtime to stop the handler after `timeout` seconds.

        Raises RuntimeUnavailable, or RuntimeTimeout if not even the runtime answered in time.
        """
        head = (
            b"POST /invoke HTTP/1.1\r\nHost: runtime\r\nContent-Type: application/json\r\n"
            b"X-Asya-Timeout: " + f"{timeout:g}".encode() + b"\r\n"
            b"Content-Length: " + str(len(envelope)).encode() + b"\r\n\r\n"
        )
        backstop = timeout + self._backstop_grace
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps every call in a task.
            async with asyncio.timeout(backstop):
                status, body = await self._exchange(head, envelope)
        except TimeoutError:
            raise RuntimeTimeout(f"the runtime did not answer within {backstop:g}s") from None
        return _interpret(status, body)

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            status, _ = await asyncio.wait_for(
                self._exchange(b"GET /healthz HTTP/1.1\r\nHost: runtime\r\n\r\n", b""), timeout
            )
        except (RuntimeUnavailable, TimeoutError):
            return False
        return status == 200

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _exchange(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        conn = self._idle.pop() if self._idle else await self._connect()
        try:
            try:
                status, answer, keep = await self._round_trip(conn, head, body)
            except _StaleConnection:
                # A kept-alive connection the runtime had already closed (it restarted, say):
                # nothing was processed, so one retry on a fresh connection is safe.
                conn = await self._connect()
                status, answer, keep = await self._round_trip(conn, head, body)
        except BaseException:
            conn.close()  # also on cancellation: a half-used connection is never reused
            raise
        if keep and len(self._idle) < self._pool_size:
            self._idle.append(conn)
        else:
            conn.close()
        return status, answer

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as exc:
            raise RuntimeUnavailable(f"cannot connect to {self.socket_path}: {exc}") from exc
        return _Connection(reader, writer)

    async def _round_trip(
        self, conn: _Connection, head: bytes, body: bytes
    ) -> tuple[int, bytes, bool]:
        reused, conn.used = conn.used, True
        try:
            # One write, so the request leaves in one system call (two cost a tenth of the
            # sidecar's CPU under load); copying a body of a few KB is cheaper than that.
            conn.writer.write(head + body if body else head)
            await conn.writer.drain()
            raw_head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            conn.close()
            if reused and not exc.partial:
                raise _StaleConnection from exc
            raise RuntimeUnavailable(
                "the runtime closed the connection before answering", during_call=True
            ) from exc
        except (OSError, asyncio.LimitOverrunError) as exc:
            conn.close()
            if reused and isinstance(exc, BrokenPipeError | ConnectionResetError):
                raise _StaleConnection from exc
            raise RuntimeUnavailable(
                f"lost the connection to the runtime: {exc}", during_call=True
            ) from exc
        status, length, keep = _parse_head(raw_head)
        try:
            answer = await conn.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError) as exc:
            conn.close()
            raise RuntimeUnavailable(
                f"the runtime's answer was cut short: {exc}", during_call=True
            ) from exc
        return status, answer, keep


class _StaleConnection(Exception):
    pass


def _parse_head(raw: bytes) -> tuple[int, int, bool]:
    lines = raw.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise RuntimeUnavailable(f"malformed status line from the runtime: {lines[0]!r}") from None
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    return status, length, keep


def _interpret(status: int, body: bytes) -> Result:
    """Turn an HTTP answer into a typed result (pure)."""
    if status == 204:
        return NoResult()
    try:
        answer = codec.loads(body) if body else {}
    except ValueError:
        return Refused(f"the runtime answered {status} with a body that is not JSON")
    if not isinstance(answer, dict):
        return Refused(f"the runtime answered {status} with {type(answer).__name__}, not an object")
    raw_details = answer.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    if status == 200:
        frames, fly = answer.get("frames"), answer.get("fly") or []
        if not isinstance(frames, list) or not isinstance(fly, list):
            return Refused("the runtime answered 200 without a list of frames")
        if "parked" in answer:
            if frames:
                return Refused("the runtime answered a parked call with frames")
            return Parked(answer["parked"], fly)
        return Frames(frames, fly) if frames or fly else NoResult()
    if status == 500 and answer.get("error") == "processing_error":
        # Parsed here, at the edge: past this point every key is present and of its type.
        return HandlerError(wire.error_details_from(details))
    message = details.get("message") or answer.get("error") or f"HTTP {status}"
    return Refused(f"the runtime refused the envelope ({status}): {message}")
