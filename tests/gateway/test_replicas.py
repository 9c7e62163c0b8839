"""Two gateway replicas on one PostgreSQL: what one replica records, the other serves.

The module starts two real `asya gateway` processes (`python -m asya_cli gateway`) on free
ports, both on the same schema of the run's PostgreSQL database and on the same local
transport (one state dir), as two pods of the gateway's Deployment would share a database
and a broker. Each test talks to both over HTTP: a task submitted to one is read, listed,
followed, canceled or submitted again through the other, and reports posted to one
replica's internal port reach the event streams of the other (LISTEN/NOTIFY).

The processes and the schema live for the whole module (starting two processes per test
would cost more than the tests); tests keep apart by their task ids, and the idempotency
tests route through queues they create for themselves, so a depth counts only their own
envelopes.

Run: `.venv/bin/pytest tests/gateway/test_replicas.py -v` (needs PostgreSQL on
127.0.0.1:5432; tests/support/postgres.py starts an installed one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from asya_shared import env, names, wire
from asya_transports.local import LocalTransport
from tests.gateway.gateway_fixtures import ACTORS, NAMESPACE, SseEvent, read_events, report
from tests.support.postgres import drop_schema, fresh_schema
from tests.support.services import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Generous: only a failing test waits this long, and other tests share the machine.
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
STREAM_TIMEOUT_S = 60.0


@dataclass
class Replica:
    """One gateway process, its two base URLs and its output (a file: a full pipe would
    stall it)."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    internal_url: str
    log: IO[bytes]

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-5000:]

    def answered(self, response: httpx.Response, status: int) -> None:
        """Assert the status of this replica's answer; a wrong one shows the replica's log
        (a 500 names nothing but "see the log")."""
        assert response.status_code == status, (
            f"{response.request.method} {response.request.url} -> {response.status_code} "
            f"{response.text}\n--- gateway {self.name}'s output:\n{self.output()}"
        )


@dataclass(frozen=True)
class Replicas:
    a: Replica
    b: Replica
    state_dir: Path


def _gateway_environ(state_dir: Path) -> dict[str, str]:
    # The caller's ASYA_* settings (a store URL, API keys, a transport) must not leak into
    # the replicas: both must run exactly what the flags below say.
    environ = {name: value for name, value in os.environ.items() if not name.startswith("ASYA_")}
    environ.update(
        {
            env.TRANSPORT: "local",
            env.STATE_DIR: str(state_dir),
            env.NAMESPACE: NAMESPACE,
            env.LOG_FORMAT: "text",
        }
    )
    return environ


def _start(name: str, store_url: str, state_dir: Path, workdir: Path) -> Replica:
    port, internal_port = free_port(), free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _stop
    process = subprocess.Popen(
        [
            sys.executable, "-m", "asya_cli", "gateway",
            "--host", "127.0.0.1", "--port", str(port), "--internal-port", str(internal_port),
            "--store", store_url,
        ],
        cwd=workdir,  # nothing of the replica's may land in the checkout
        env=_gateway_environ(state_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Replica(
        name, process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal_port}", log
    )


def _wait_ready(replica: Replica) -> None:
    def ready() -> bool:
        if replica.process.poll() is not None:
            pytest.fail(
                f"gateway {replica.name} exited with {replica.process.returncode} before it "
                f"was ready:\n{replica.output()}"
            )
        return httpx.get(f"{replica.url}/readyz", timeout=5).status_code == 200

    wait_until(
        ready,
        what=f"gateway {replica.name} to answer 200 on {replica.url}/readyz",
        timeout=START_DEADLINE_S,
        interval=0.05,
        ignore=httpx.TransportError,
        details=replica.output,
    )


def _stop(replicas: list[Replica]) -> list[str]:
    """SIGTERM every replica, SIGKILL one that outlives the deadline; what went wrong."""
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGTERM)
    problems = []
    for replica in replicas:
        try:
            code = replica.process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()
            problems.append(
                f"gateway {replica.name} ignored SIGTERM for {STOP_DEADLINE_S}s:\n"
                f"{replica.output()}"
            )
        else:
            if code != 0:
                problems.append(
                    f"gateway {replica.name} exited with {code} after SIGTERM:\n{replica.output()}"
                )
        replica.log.close()
    return problems


async def _prepare(postgres_url: str, state_dir: Path) -> tuple[str, str]:
    """A schema of the module's own, and the queues the tests route through."""
    async with LocalTransport(state_dir) as admin:
        for actor in ACTORS:
            await admin.ensure_queue(names.queue_name(NAMESPACE, actor))
    return await fresh_schema(postgres_url)


@pytest.fixture(scope="module")
def replicas(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two gateway processes on one PostgreSQL schema and one local transport."""
    root = tmp_path_factory.mktemp("replicas")
    state_dir = root / "state"
    schema, store_url = asyncio.run(_prepare(postgres_url, state_dir))
    started: list[Replica] = []
    try:
        # One after the other: the first creates the schema's tables, so the second finds
        # them made (concurrent migration has tests of its own in test_store_postgres.py).
        for name in ("A", "B"):
            started.append(_start(name, store_url, state_dir, root))
            _wait_ready(started[-1])
        yield Replicas(started[0], started[1], state_dir)
    finally:
        problems = _stop(started)
        asyncio.run(drop_schema(postgres_url, schema))
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=STREAM_TIMEOUT_S) as made:
        yield made


# ------------------------------------------------------------------------------- helpers


def _new_id() -> str:
    return f"r-{uuid.uuid4().hex[:12]}"


async def _submit(client: httpx.AsyncClient, replica: Replica) -> dict[str, Any]:
    """A two-actor task (a, b) submitted to `replica`; the task as it answered."""
    response = await client.post(
        f"{replica.url}/v1/tasks", json={"route": ["a", "b"], "payload": {"n": 1}}
    )
    replica.answered(response, 201)
    task: dict[str, Any] = response.json()
    return task


async def _post_reports(
    client: httpx.AsyncClient, replica: Replica, *reports: wire.HopReport, cursor: int = 0
) -> dict[str, Any]:
    response = await client.post(
        f"{replica.internal_url}/internal/v1/reports",
        json={"reports": list(reports), "canceled_cursor": cursor},
    )
    replica.answered(response, 200)
    answer: dict[str, Any] = response.json()
    return answer


@contextlib.asynccontextmanager
async def _stream(
    client: httpx.AsyncClient, replica: Replica, task_id: str, **headers: str
) -> AsyncIterator[AsyncIterator[SseEvent]]:
    url = f"{replica.url}/v1/tasks/{task_id}/events"
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
        replica.answered(response, 200)
        yield read_events(response.aiter_lines())


async def _until_end(events: AsyncIterator[SseEvent]) -> list[SseEvent]:
    """Every further event and comment, until the replica ends the stream.

    Comments are kept on purpose: a stream re-reads the task's history at each keep-alive,
    so a status event that only shows up after a keep-alive came through that fallback,
    not through the other replica's notification."""
    async with asyncio.timeout(STREAM_TIMEOUT_S):
        return [event async for event in events]


def _first_half(task_id: str) -> list[wire.HopReport]:
    """Picked up by a, two streamed tokens, routed to b."""
    return [
        report(task_id, "received", curr="a", next_=["b"]),
        report(task_id, "fly", curr="a", next_=["b"], events=[{"token": "Hel"}, {"token": "lo"}]),
        report(task_id, "routed", prev=["a"], curr="b"),
    ]


def _second_half(task_id: str) -> list[wire.HopReport]:
    """One more token from b, then x-sink records the success."""
    return [
        report(task_id, "fly", prev=["a"], curr="b", events=[{"token": "!"}]),
        report(task_id, "succeeded", prev=["a", "b"], curr="x-sink", result={"text": "Hello!"}),
    ]


def _status_ids(*events: SseEvent) -> list[int]:
    """The ids of the status events among `events`; each must have one (a client resumes
    from it)."""
    ids = [event.id for event in events if event.kind == "status"]
    assert None not in ids, ids
    return [event_id for event_id in ids if event_id is not None]


# --------------------------------------------------------------------------------- tests


async def test_a_task_submitted_to_one_replica_is_read_and_listed_by_the_other(
    replicas: Replicas, client: httpx.AsyncClient
) -> None:
    submitted = await _submit(client, replicas.a)

    read = await client.get(f"{replicas.b.url}/v1/tasks/{submitted['id']}")
    replicas.b.answered(read, 200)
    assert read.json() == submitted
    listed = await client.get(f"{replicas.b.url}/v1/tasks", params={"status": "pending"})
    replicas.b.answered(listed, 200)
    assert submitted in listed.json()["tasks"]
    # And B serves what A recorded later, not a copy of what it saw first.
    await _post_reports(client, replicas.a, report(submitted["id"], "received", curr="a"))
    moved = (await client.get(f"{replicas.b.url}/v1/tasks/{submitted['id']}")).json()
    assert (moved["status"], moved["actor"]) == ("running", "a")


async def test_a_stream_on_one_replica_follows_reports_posted_to_the_other(
    replicas: Replicas, client: httpx.AsyncClient
) -> None:
    task_id = (await _submit(client, replicas.a))["id"]
    async with _stream(client, replicas.b, task_id) as events:
        first = await anext(events)
        assert first.kind == "status"
        assert (first.data["id"], first.data["status"]) == (task_id, "pending")
        # Two batches, as two sidecars would send them: order must hold across them.
        await _post_reports(client, replicas.a, *_first_half(task_id))
        await _post_reports(client, replicas.a, *_second_half(task_id))
        following = await _until_end(events)
    # FLY events are never re-read from history, so seeing them on B at all means A's
    # notification reached B; no keep-alive before them means it was not the fallback.
    assert [(event.kind, event.data) for event in following] == [
        ("status", {"status": "running", "actor": "a", "progress": 0.0}),
        ("fly", {"token": "Hel"}),
        ("fly", {"token": "lo"}),
        ("status", {"status": "running", "actor": "b", "progress": 0.5}),
        ("fly", {"token": "!"}),
        ("status", {"status": "succeeded", "actor": "x-sink", "progress": 1.0}),
    ]
    ids = _status_ids(first, *following)
    assert ids == sorted(set(ids))  # rising, none twice


async def test_a_cancel_on_one_replica_reaches_sidecars_reporting_to_the_other(
    replicas: Replicas, client: httpx.AsyncClient
) -> None:
    task_id = (await _submit(client, replicas.a))["id"]
    await _post_reports(client, replicas.a, report(task_id, "received", curr="a", next_=["b"]))

    canceled = await client.delete(f"{replicas.b.url}/v1/tasks/{task_id}")
    replicas.b.answered(canceled, 200)
    assert canceled.json()["status"] == "canceled"
    # A sidecar's next batch to A, starting from cursor 0, learns of B's cancellation.
    answer = await _post_reports(
        client, replicas.a, report(task_id, "routed", prev=["a"], curr="b"), cursor=0
    )
    assert answer["accepted"] == 1
    assert task_id in answer["canceled"]
    assert answer["canceled_cursor"] > 0
    # From the cursor it was given, the same sidecar is not told again.
    again = await _post_reports(client, replicas.a, cursor=answer["canceled_cursor"])
    assert task_id not in again["canceled"]
    # The late "routed" report moved nothing: canceled is terminal, on both replicas.
    for replica in (replicas.a, replicas.b):
        task = (await client.get(f"{replica.url}/v1/tasks/{task_id}")).json()
        assert (task["status"], task["actor"]) == ("canceled", "a"), replica.name


async def test_a_reconnect_to_one_replica_gets_what_was_reported_to_the_other(
    replicas: Replicas, client: httpx.AsyncClient
) -> None:
    task_id = (await _submit(client, replicas.a))["id"]
    async with _stream(client, replicas.a, task_id) as events:
        first = await anext(events)
    await _post_reports(client, replicas.b, *_first_half(task_id))

    async with _stream(client, replicas.a, task_id, **{"Last-Event-ID": str(first.id)}) as events:
        # Missed while away: the status events only (FLY events are live-only). A read
        # waits at most the client's timeout.
        missed = [await anext(events), await anext(events)]
        assert [(event.kind, event.data) for event in missed] == [
            ("status", {"status": "running", "actor": "a", "progress": 0.0}),
            ("status", {"status": "running", "actor": "b", "progress": 0.5}),
        ]
        # Then live: B's next reports reach this stream on A.
        await _post_reports(client, replicas.b, *_second_half(task_id))
        live = await _until_end(events)
    assert [(event.kind, event.data) for event in live] == [
        ("fly", {"token": "!"}),
        ("status", {"status": "succeeded", "actor": "x-sink", "progress": 1.0}),
    ]
    ids = _status_ids(first, *missed, *live)
    assert ids == sorted(set(ids))  # nothing before Last-Event-ID, none twice


async def test_an_id_submitted_to_both_replicas_makes_one_task_and_one_envelope(
    replicas: Replicas, client: httpx.AsyncClient
) -> None:
    first_actor = await _fresh_queue(replicas.state_dir)
    task_id = _new_id()
    body = {"id": task_id, "route": [first_actor, "b"], "payload": {"n": 1}}
    first = await client.post(f"{replicas.a.url}/v1/tasks", json=body)
    replicas.a.answered(first, 201)
    second = await client.post(f"{replicas.b.url}/v1/tasks", json=body)
    replicas.b.answered(second, 200)
    assert second.json() == first.json()
    assert first.json()["id"] == task_id
    assert await _depth(replicas.state_dir, first_actor) == 1


async def test_an_id_submitted_to_both_replicas_at_once_makes_one_envelope(
    replicas: Replicas, client: httpx.AsyncClient
) -> None:
    first_actor = await _fresh_queue(replicas.state_dir)
    body = {"id": _new_id(), "route": [first_actor], "payload": {"n": 2}}
    answers = await asyncio.gather(
        *(client.post(f"{replica.url}/v1/tasks", json=body) for replica in (replicas.a, replicas.b))
    )
    # Whichever insert commits first wins; the other finds its row and publishes nothing.
    assert sorted(answer.status_code for answer in answers) == [200, 201], (
        f"{[answer.text for answer in answers]}\n--- A:\n{replicas.a.output()}"
        f"\n--- B:\n{replicas.b.output()}"
    )
    assert answers[0].json() == answers[1].json()
    assert await _depth(replicas.state_dir, first_actor) == 1


async def _fresh_queue(state_dir: Path) -> str:
    """An actor whose queue only this test sends to, so its depth is the test's own."""
    actor = f"once-{uuid.uuid4().hex[:8]}"
    async with LocalTransport(state_dir) as transport:
        await transport.ensure_queue(names.queue_name(NAMESPACE, actor))
    return actor


async def _depth(state_dir: Path, actor: str) -> int:
    async with LocalTransport(state_dir) as transport:
        return await transport.queue_depth(names.queue_name(NAMESPACE, actor))
