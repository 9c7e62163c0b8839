"""A task recorded but never published (its gateway died in between) is published by the
sweep (asya_gateway/outbox.py), once; a published one never again. Real SQLite store, real
embedded transport, and a real gateway server for the sweep at start."""

from __future__ import annotations

import datetime
from pathlib import Path

import httpx

import asya_transports as transports
from asya_gateway import outbox
from asya_gateway.server import GatewayServer, GatewaySettings
from asya_gateway.store.sqlite import SQLiteStore
from asya_gateway.store.urls import sqlite_url
from asya_gateway.submit import Submission, build_envelope, build_task, encode
from asya_gateway.tasks import Task
from asya_shared import names
from asya_transports.local import LocalTransport
from tests.gateway.gateway_fixtures import (
    ACTORS,
    NAMESPACE,
    local_transport,
    receive_envelope,
    sqlite_store,
)

__all__ = ["local_transport", "sqlite_store"]  # fixtures, used by name

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def record_only(store: SQLiteStore, task_id: str, *, at: datetime.datetime) -> Task:
    """What a gateway killed right after recording a submit leaves: the task, its envelope
    in the outbox, nothing on any queue."""
    envelope = build_envelope(
        Submission(route=("a", "b"), payload={"n": task_id}),
        task_id=task_id,
        now=at,
        traceparent="00-1-2-01",
    )
    task = build_task(Submission(route=("a", "b"), payload=None), envelope, tenant="")
    await store.create(task, envelope=encode(envelope).decode())
    return task


async def test_an_envelope_left_in_the_outbox_is_published_once(
    sqlite_store: SQLiteStore, local_transport: transports.Broker
) -> None:
    await record_only(sqlite_store, "lost", at=NOW)
    young = await record_only(sqlite_store, "young", at=NOW + datetime.timedelta(seconds=25))

    sent = await outbox.republish(
        sqlite_store, local_transport, namespace=NAMESPACE, now=NOW + datetime.timedelta(seconds=31)
    )

    assert sent == 1  # "young" may still be on its way from its own POST
    envelope = await receive_envelope(local_transport, "a")
    assert (envelope["id"], envelope["payload"], envelope["route"]["curr"]) == (
        "lost",
        {"n": "lost"},
        "a",
    )
    later = NOW + datetime.timedelta(seconds=120)
    again = await outbox.republish(sqlite_store, local_transport, namespace=NAMESPACE, now=later)
    assert again == 1  # "young" now; "lost" was published and is not sent twice
    assert (await receive_envelope(local_transport, "a"))["id"] == young.id
    assert await local_transport.queue_depth(names.queue_name(NAMESPACE, "a")) == 0


async def test_a_broker_that_refuses_leaves_the_envelope_for_the_next_sweep(
    sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    await record_only(sqlite_store, "waiting", at=NOW)
    # No queue for "a" exists in this state dir: the broker refuses the publish.
    async with LocalTransport(tmp_path / "empty") as refusing:
        later = NOW + datetime.timedelta(seconds=60)
        assert await outbox.republish(sqlite_store, refusing, namespace=NAMESPACE, now=later) == 0

    [still] = await sqlite_store.claim_unpublished(
        "2030-01-01T01:00:00Z", now="2030-01-01T01:00:00Z", limit=10
    )
    assert still.task.id == "waiting"


async def test_a_gateway_publishes_at_start_what_its_predecessor_left(tmp_path: Path) -> None:
    state_dir, db = tmp_path / "state", tmp_path / "gateway.db"
    async with LocalTransport(state_dir) as admin:
        for actor in ACTORS:
            await admin.ensure_queue(names.queue_name(NAMESPACE, actor))
    store = SQLiteStore(db)
    await store.open()
    try:
        await record_only(store, "orphan", at=datetime.datetime.now(datetime.UTC))
    finally:
        await store.close()

    server = GatewayServer(
        GatewaySettings(port=0, internal_port=0, store_url=sqlite_url(db)),
        {"ASYA_STATE_DIR": str(state_dir)},
        republish_wait_s=0.0,
    )
    await server.start()
    try:
        async with LocalTransport(state_dir) as reader:
            envelope = await receive_envelope(reader, "a")
        assert envelope["id"] == "orphan"
        async with httpx.AsyncClient() as client:
            task = (await client.get(f"{server.url}/v1/tasks/orphan")).json()
        assert task["status"] == "pending"  # until its first actor reports
    finally:
        server.stop()
        await server.wait()
