"""The sidecar's side of the runtime protocol: HTTP/1.1 over the runtime's Unix socket.

It speaks only what the runtime serves (docs/runtime-protocol.md): requests with a
Content-Length body, answers framed by Content-Length, connections kept alive and reused.
Given `on_fly`, a call asks for live side events (`X-Asya-Fly: live`): a handler that yields
FLY is then answered with a chunked ndjson stream, whose `fly` lines go to `on_fly` as they
arrive and whose last line is the answer the call would otherwise have had.
We do not use a general-purpose client here because every envelope pays this cost on every
hop: against the same runtime, httpx managed about 1,300 calls/s and this kind of minimal
client about 8,000 (bench/runtime_invoke.py, sync echo, one connection).

Answers are turned into typed results; failures to talk to the runtime at all become
RuntimeUnavailable, so the caller can requeue instead of failing the envelope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
# Called with the events of each `fly` line of a streamed answer, as it arrives.
OnFly = Callable[[list[Any]], None]
_INVOKE = b"POST /invoke HTTP/1.1\r\nHost: runtime\r\nContent-Type: application/json\r\n"
_INVOKE_LIVE = _INVOKE + b"X-Asya-Fly: live\r\n"
# Longest line of a streamed answer we hold while waiting for its end (a frame can be big).
MAX_STREAM_LINE = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Streamed:
    """The final line of a streamed answer: the status and body (parsed) it stands for."""

    status: int
    body: Any


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

    async def invoke(
        self, envelope: bytes, *, timeout: float, on_fly: OnFly | None = None
    ) -> Result:
        """POST /invoke, asking the runtime to stop the handler after `timeout` seconds.

        With `on_fly`, side events arrive live: `on_fly` gets each batch as the runtime sends
        it (before this returns), and the result carries no `fly` of its own. The timeout
        backstop covers the whole call, stream included.

        Raises RuntimeUnavailable, or RuntimeTimeout if not even the runtime answered in time.
        """
        head = (
            (_INVOKE if on_fly is None else _INVOKE_LIVE)
            + b"X-Asya-Timeout: "
            + f"{timeout:g}".encode()
            + b"\r\nContent-Length: "
            + str(len(envelope)).encode()
            + b"\r\n\r\n"
        )
        backstop = timeout + self._backstop_grace
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps every call in a task.
            async with asyncio.timeout(backstop):
                status, body = await self._exchange(head, envelope, on_fly)
        except TimeoutError:
            raise RuntimeTimeout(f"the runtime did not answer within {backstop:g}s") from None
        if isinstance(body, _Streamed):
            return _interpret_answer(body.status, body.body)
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

    async def _exchange(
        self, head: bytes, body: bytes, on_fly: OnFly | None = None
    ) -> tuple[int, bytes | _Streamed]:
        conn = self._idle.pop() if self._idle else await self._connect()
        try:
            try:
                status, answer, keep = await self._round_trip(conn, head, body, on_fly)
            except _StaleConnection:
                # A kept-alive connection the runtime had already closed (it restarted, say):
                # nothing was processed, so one retry on a fresh connection is safe.
                try:
                    conn = await self._connect()
                except RuntimeUnavailable as exc:
                    # Gone now: the silent close may as well have been its death under this
                    # request (a handler that kills its process looks exactly so), and it
                    # must count against the envelope (crash_ledger.py).
                    raise RuntimeUnavailable(
                        f"the runtime closed a kept-alive connection under the request and "
                        f"is gone: {exc}",
                        during_call=True,
                    ) from exc
                status, answer, keep = await self._round_trip(conn, head, body, on_fly)
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
        self, conn: _Connection, head: bytes, body: bytes, on_fly: OnFly | None
    ) -> tuple[int, bytes | _Streamed, bool]:
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
            if length < 0:  # chunked: the runtime streams side events (X-Asya-Fly: live)
                streamed = await _read_stream(conn.reader, on_fly)
                return status, streamed, keep
            answer = await conn.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            conn.close()
            raise RuntimeUnavailable(
                f"the runtime's answer was cut short: {exc}", during_call=True
            ) from exc
        return status, answer, keep


class _StaleConnection(Exception):
    pass


def _parse_head(raw: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length or -1 for a chunked body, keep the connection)."""
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
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            length = -1
    return status, length, keep


async def _read_stream(reader: asyncio.StreamReader, on_fly: OnFly | None) -> _Streamed:
    """Read a streamed answer to its last chunk, handing each `fly` line to `on_fly`.

    Lines may span chunks. Raises asyncio.IncompleteReadError when the stream is cut short
    (the runtime died), and _Malformed when it is not what the runtime sends.
    """
    pending = b""
    answer: _Streamed | None = None
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            raise _Malformed(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            await reader.readuntil(b"\r\n")  # the runtime sends no trailer fields
            break
        chunk = await reader.readexactly(size + 2)
        pending += chunk[:-2]
        if len(pending) > MAX_STREAM_LINE:
            raise _Malformed(f"a line longer than {MAX_STREAM_LINE} bytes")
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if answer is not None:
                raise _Malformed("a line after the final answer line")
            answer = _stream_line(line, on_fly)
    if pending.strip():
        raise _Malformed("the last line does not end with a newline")
    if answer is None:
        raise _Malformed("it ended without the final answer line")
    return answer


def _stream_line(line: bytes, on_fly: OnFly | None) -> _Streamed | None:
    """Act on one line of a streamed answer: hand `fly` events on, return the final answer."""
    try:
        item = codec.loads(line)
    except ValueError:
        raise _Malformed("a line that is not JSON") from None
    if isinstance(item, dict):
        events = item.get("fly")
        if isinstance(events, list):
            if on_fly is not None and events:
                on_fly(events)
            return None
        answer = item.get("answer")
        if isinstance(answer, dict) and isinstance(answer.get("status"), int):
            return _Streamed(answer["status"], answer.get("body"))
    raise _Malformed(f"a line that is neither fly nor answer: {line[:80]!r}")


class _Malformed(RuntimeUnavailable):
    """A streamed answer that breaks the protocol: treated like a cut-short answer."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"the runtime's streamed answer is malformed: {problem}", during_call=True)


def _interpret(status: int, body: bytes) -> Result:
    """Turn an HTTP answer into a typed result (pure)."""
    if status == 204:
        return NoResult()
    try:
        answer = codec.loads(body) if body else {}
    except ValueError:
        return Refused(f"the runtime answered {status} with a body that is not JSON")
    return _interpret_answer(status, answer)


def _interpret_answer(status: int, answer: Any) -> Result:
    """Turn a status and its parsed body (None for none) into a typed result (pure)."""
    if status == 204:
        return NoResult()
    if answer is None:
        answer = {}
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
