"""A TCP proxy between the sidecars and the broker that a scenario can blackhole.

`blackhole()` behaves like a firewall that drops every packet on the broker's port: bytes
stop moving in both directions on the connections already open, and a new connection is
accepted but nothing is forwarded on it (and the broker is not even dialled). Nobody gets a
reset or an end of stream: each side only notices the silence through its own timeouts or
heartbeats. `restore()` lets the traffic through again.

Bytes are held, never dropped: while blackholed the proxy stops reading, so what a peer
writes waits in the kernel's buffers and is delivered after the restore, as TCP's
retransmissions would deliver it once the path is back. Dropping them would corrupt the
stream, which no firewall does. A peer that gave up meanwhile and closed its socket is seen
only after the restore (the end of stream is held too), and the proxy then closes the other
side.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 10.0


@dataclass(eq=False)
class _Pair:
    """One client connection and, once dialled, its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()


class Proxy:
    """Listens on `host`:`port` (0: a free port) and forwards to `target_host`:`target_port`."""

    def __init__(
        self, target_port: int, *, target_host: str = "127.0.0.1", host: str = "127.0.0.1"
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.accepted = 0  # connections accepted so far, for tests and logs
        self._open = asyncio.Event()  # set: bytes flow; clear: blackholed
        self._open.set()
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    @property
    def connections(self) -> int:
        """Client connections open right now."""
        return len(self._pairs)

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [task for pair in self._pairs for task in pair.tasks]
        for pair in list(self._pairs):
            pair.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def drop_connections(self) -> None:
        """Close every open connection now, as a broker that went away does (its peers see
        the end of stream at once, unlike a blackhole)."""
        for pair in list(self._pairs):
            pair.close()

    def blackhole(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        pair = _Pair(writer)
        this = asyncio.current_task()
        if this is not None:  # so that close() can end a connection held by a blackhole
            pair.tasks.add(this)
        self._pairs.add(pair)
        try:
            # A connection accepted during a blackhole is held: the broker is dialled only
            # once the path is back, as a SYN retransmitted after the outage would reach it.
            await self._open.wait()
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port),
                    CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError):
                return  # the broker is down: the client sees its connection closed
            pair.upstream = up_writer
            pumps = {
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            }
            pair.tasks |= pumps
            # Either direction ending (end of stream or error) ends the connection.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            pair.close()
            self._pairs.discard(pair)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                # Not reading while blackholed is what holds the bytes (see the docstring).
                await self._open.wait()
                data = await reader.read(CHUNK)
                # A read already waiting when the blackhole began must not slip through.
                await self._open.wait()
                if not data:
                    return
                writer.write(data)
                await writer.drain()
