"""The local (SQLite) transport: the shared contract, then what only a file shared by several
OS processes has to get right (exactly-once hand-out, durability, crash recovery)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_transports import (
    Broker,
    TransportError,
    TransportUnavailable,
    local,
)
from asya_transports.local import LocalTransport
from tests.support.waiting import eventually
from tests.transports.contract import (
    WAIT_S,
    MakeTransport,
    TransportContract,
    next_delivery,
    nothing_arrives,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.transports.local_helpers.worker"
PROCESS_WAIT_S = 60.0  # subprocesses start a Python interpreter each; be generous


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def make_transport(state_dir: Path) -> AsyncIterator[MakeTransport]:
    opened: list[LocalTransport] = []

    async def make(**overrides: Any) -> Broker:
        transport = LocalTransport(state_dir, **overrides)
        opened.append(transport)
        return await transport.__aenter__()

    yield make
    for transport in opened:
        await transport.close()


@pytest.fixture
async def queue(state_dir: Path) -> str:
    name = f"asya-test-{uuid.uuid4().hex[:8]}"
    async with LocalTransport(state_dir) as admin:
        await admin.ensure_queue(name)
    return name


@pytest.fixture
def broker() -> None:
    """The embedded transport has no broker process: the recovery test does not apply."""


class TestLocalContract(TransportContract):
    HAS_LEASES = True
    COUNTS_DELIVERIES = True
    MAX_DELAY_S = None  # a delay is a timestamp in the database: any length works


# --- Configuration ----------------------------------------------------------------------------


def test_from_env_defaults() -> None:
    transport = LocalTransport.from_env({})

    assert transport.path == Path(".asya") / "queues.sqlite3"
    assert transport.lease_seconds == 30.0
    assert transport.max_message_bytes == 256 * 1024 * 1024
    assert transport.name == "local"


def test_from_env_reads_state_dir_and_lease(tmp_path: Path) -> None:
    transport = LocalTransport.from_env(
        {"ASYA_STATE_DIR": str(tmp_path), "ASYA_LOCAL_LEASE_SECONDS": "2.5"}
    )

    assert transport.path == tmp_path / "queues.sqlite3"
    assert transport.lease_seconds == 2.5


@pytest.mark.parametrize("bad", ["soon", "0", "-1", "nan"])
def test_from_env_refuses_a_bad_lease(bad: str) -> None:
    with pytest.raises(ValueError, match="ASYA_LOCAL_LEASE_SECONDS") as caught:
        LocalTransport.from_env({"ASYA_LOCAL_LEASE_SECONDS": bad})

    assert repr(bad) in str(caught.value)


def test_idle_polling_backs_off_to_a_cap() -> None:
    delays = [local.IDLE_FIRST_S]
    for _ in range(20):
        delays.append(local.next_idle_delay(delays[-1]))

    assert delays == sorted(delays)
    assert delays[-1] == local.IDLE_MAX_S


# --- One process ------------------------------------------------------------------------------


async def test_messages_survive_closing_the_transport(state_dir: Path, queue: str) -> None:
    async with LocalTransport(state_dir) as first:
        await first.send(queue, b"kept on disk")

    async with LocalTransport(state_dir) as second:
        receiver = second.receive(queue, prefetch=1)
        delivery = await next_delivery(receiver)

        assert delivery.body == b"kept on disk"
        assert delivery.delivery_count == 1
        await delivery.ack()
        await receiver.aclose()


async def test_database_uses_wal_and_records_its_schema(state_dir: Path, queue: str) -> None:
    with sqlite3.connect(state_dir / "queues.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == local.SCHEMA_VERSION
    conn.close()


def stamp_schema_version(state_dir: Path, version: int) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state_dir / "queues.sqlite3")
    conn.execute(f"PRAGMA user_version={version:d}")
    conn.close()


async def test_a_newer_schema_is_refused(state_dir: Path) -> None:
    stamp_schema_version(state_dir, local.SCHEMA_VERSION + 1)

    transport = LocalTransport(state_dir)
    with pytest.raises(TransportError, match="newer than this Asya understands"):
        await transport.__aenter__()
    await transport.close()


async def test_depth_counts_delayed_messages_as_waiting(
    make_transport: MakeTransport, queue: str
) -> None:
    transport = await make_transport()
    await transport.send(queue, b"next hour", delay=3600.0)
    receiver = transport.receive(queue, prefetch=1)

    assert await nothing_arrives(receiver)
    assert await transport.queue_depth(queue) == 1
    await receiver.aclose()


async def test_a_stale_handle_cannot_nack_or_extend_the_new_lease(
    make_transport: MakeTransport, queue: str
) -> None:
    transport = await make_transport(lease_seconds=0.5)
    await transport.send(queue, b"contested")
    stale = await next_delivery(transport.receive(queue, prefetch=1))
    holder = (await make_transport(lease_seconds=30.0)).receive(queue, prefetch=1)
    current = await next_delivery(holder)  # arrives once the 0.5 s lease has run out

    await stale.nack()
    await stale.extend(0.0)
    watcher = (await make_transport()).receive(queue, prefetch=1)

    assert current.delivery_count == 2
    assert await nothing_arrives(watcher)  # still held by `current`
    await current.ack()
    await watcher.aclose()


async def test_locked_database_is_reported_as_unavailable(
    make_transport: MakeTransport, queue: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "BUSY_TIMEOUT_S", 0.2)
    transport = await make_transport()  # connects with the short busy timeout
    locker = sqlite3.connect(state_dir / "queues.sqlite3", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransportUnavailable, match="locked") as caught:
            await transport.send(queue, b"blocked")
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    await transport.send(queue, b"fine again")
    assert await transport.queue_depth(queue) == 1


async def test_close_is_idempotent_and_final(make_transport: MakeTransport, queue: str) -> None:
    transport = await make_transport()

    await transport.close()
    await transport.close()

    with pytest.raises(TransportUnavailable, match="closed"):
        await transport.send(queue, b"too late")
    with pytest.raises(TransportUnavailable, match="closed"):
        transport.receive(queue, prefetch=1)


# --- Several OS processes ---------------------------------------------------------------------


def start_worker(
    mode: str, state_dir: Path, queue: str, out: Path, **env: str
) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")])
    )
    environ.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", WORKER, mode, str(state_dir), queue, str(out)],
        cwd=REPO_ROOT,
        env=environ,
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def lines(paths: list[Path]) -> list[str]:
    return [line for path in paths if path.exists() for line in path.read_text().splitlines()]


async def test_three_processes_consume_each_message_exactly_once(
    state_dir: Path,
    queue: str,
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    outs = [tmp_path / f"consumer-{i}.txt" for i in range(3)]
    workers.extend(start_worker("consume", state_dir, queue, out) for out in outs)
    await eventually(
        lambda: all(out.with_name(out.name + ".ready").exists() for out in outs),
        "three consumers to open the queue",
    )
    expected = [f"m-{i:04d}" for i in range(300)]

    async with LocalTransport(state_dir) as producer:
        for body in expected:
            await producer.send(queue, body.encode())
        await eventually(lambda: len(lines(outs)) >= len(expected), "300 acks")

        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            assert await asyncio.to_thread(proc.wait, PROCESS_WAIT_S) == 0

        assert sorted(lines(outs)) == expected  # no duplicates, none missing
        assert await producer.queue_depth(queue) == 0


async def test_a_killed_consumer_s_message_returns_after_its_lease(
    state_dir: Path,
    queue: str,
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    lease = 2.0
    out = tmp_path / "held.json"
    async with LocalTransport(state_dir) as transport:
        await transport.send(queue, b"orphan")
        proc = start_worker("hold", state_dir, queue, out, ASYA_LOCAL_LEASE_SECONDS=str(lease))
        workers.append(proc)
        await eventually(out.exists, "the worker to take the message")
        held = json.loads(out.read_text())

        proc.kill()  # SIGKILL: no chance to release anything
        await asyncio.to_thread(proc.wait, PROCESS_WAIT_S)
        receiver = transport.receive(queue, prefetch=1)
        again = await next_delivery(receiver, timeout=WAIT_S + lease)

        assert (held["body"], held["delivery_count"]) == ("orphan", 1)
        assert again.body == b"orphan"
        assert again.delivery_count == 2
        # Not before the lease ran out (0.25 s for the worker's clock read after leasing).
        assert time.time() >= held["at"] + lease - 0.25
        await again.ack()
        await receiver.aclose()
