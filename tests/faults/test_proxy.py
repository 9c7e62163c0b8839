"""faults.proxy over real loopback sockets: it forwards, a blackhole holds bytes in both
directions and holds new connections without dialling the broker, and a restore delivers
everything held, in order, with nothing dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from faults.harness import wait_for
from faults.proxy import Proxy

# How long "nothing arrives" is watched for: a bounded observation of silence, not a wait
# for something to happen.
SILENCE_S = 0.5
DEADLINE_S = 10.0


class EchoServer:
    """Echoes what each connection sends; counts connections and remembers end of streams."""

    def __init__(self) -> None:
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.ended = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self.writers:
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
            self.ended.set()
        except OSError:
            self.ended.set()
        finally:
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[Proxy]:
    async with Proxy(echo.port) as started:
        yield started


async def connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(size), DEADLINE_S)


async def silent(reader: asyncio.StreamReader) -> bool:
    """Whether nothing (no byte, no end of stream) arrives within SILENCE_S."""
    try:
        await asyncio.wait_for(reader.read(1), SILENCE_S)
    except TimeoutError:
        return True
    return False


async def test_forwards_both_ways(proxy: Proxy, echo: EchoServer) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"hello")
    assert await read_exactly(reader, 5) == b"hello"
    assert echo.accepted == 1
    assert proxy.connections == 1
    writer.close()


async def test_blackhole_holds_bytes_on_an_open_connection_and_restore_delivers_them(
    proxy: Proxy, echo: EchoServer
) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"before")
    assert await read_exactly(reader, 6) == b"before"

    proxy.blackhole()
    writer.write(b"during-1 ")
    writer.write(b"during-2")
    await writer.drain()
    assert await silent(reader), "bytes went through a blackhole"
    assert not echo.ended.is_set()

    proxy.restore()
    # Held, not dropped: everything written during the outage arrives, in order.
    assert await read_exactly(reader, 17) == b"during-1 during-2"
    writer.close()


async def test_blackhole_holds_the_way_back_too(proxy: Proxy, echo: EchoServer) -> None:
    """What the broker sends during the outage (a heartbeat, a delivery) is held as well."""
    reader, writer = await connect(proxy)
    writer.write(b"x")
    assert await read_exactly(reader, 1) == b"x"
    proxy.blackhole()
    echo.writers[0].write(b"from the broker")
    assert await silent(reader), "bytes from the broker went through a blackhole"
    proxy.restore()
    assert await read_exactly(reader, 15) == b"from the broker"
    writer.close()


async def test_new_connection_during_blackhole_is_accepted_but_never_dialled(
    proxy: Proxy, echo: EchoServer
) -> None:
    proxy.blackhole()
    reader, writer = await connect(proxy)  # accepted: the connect itself succeeds
    writer.write(b"knock")
    await writer.drain()
    assert await silent(reader)
    assert echo.accepted == 0, "the proxy dialled the broker during a blackhole"
    assert proxy.accepted == 1

    proxy.restore()
    assert await read_exactly(reader, 5) == b"knock"
    assert echo.accepted == 1
    writer.close()


async def test_a_peer_that_gives_up_during_blackhole_is_seen_after_restore(
    proxy: Proxy, echo: EchoServer
) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"a")
    assert await read_exactly(reader, 1) == b"a"
    proxy.blackhole()
    writer.close()
    await writer.wait_closed()
    with pytest.raises(TimeoutError):  # "an end of stream crossed the blackhole"
        await asyncio.wait_for(echo.ended.wait(), SILENCE_S)
    proxy.restore()
    await asyncio.wait_for(echo.ended.wait(), DEADLINE_S)
    await wait_until_no_connections(proxy)


async def test_broker_down_closes_the_client(echo: EchoServer) -> None:
    async with Proxy(echo.port) as proxy:
        await echo.close()
        reader, writer = await connect(proxy)
        assert await asyncio.wait_for(reader.read(1), DEADLINE_S) == b""
        writer.close()


async def test_close_ends_connections_held_by_a_blackhole(echo: EchoServer) -> None:
    proxy = await Proxy(echo.port).start()
    proxy.blackhole()
    reader, writer = await connect(proxy)
    await wait_for(lambda: proxy.connections == 1, "the connection to be accepted", DEADLINE_S)
    await asyncio.wait_for(proxy.close(), DEADLINE_S)
    assert await asyncio.wait_for(reader.read(1), DEADLINE_S) == b""
    assert echo.accepted == 0
    writer.close()


async def wait_until_no_connections(proxy: Proxy) -> None:
    await wait_for(lambda: proxy.connections == 0, "the proxy to close both sides", DEADLINE_S)
