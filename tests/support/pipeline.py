"""Real pipelines for integration tests: every actor a runtime and a sidecar process.

`start_pipeline` (a fixture, registered in tests/conftest.py) starts a LocalPipeline (what
`asya dev` runs) on the transport named by the `transport_kind` fixture, in a fresh namespace,
and stops it after the test. The returned RunningPipeline sends envelopes and reads what
x-sink and x-sump stored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from asya_cli.local_pipeline import LocalPipeline
from asya_cli.manifests import ActorManifest
from asya_shared import records
from asya_transports import Broker
from tests.support.waiting import eventually

HANDLERS = Path(__file__).parent.parent / "sidecar" / "handlers"
READY_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 60.0
# moto answers each SQS call by walking (and deep-copying) the whole queue, so a backlog of N
# messages costs it O(N^2): on a 2-core machine 1,000 envelopes through one actor took 270 s.
# A test that pushes a backlog through a pipeline sizes it with `backlog`.
MOTO_BACKLOG = 300


def backlog(transport: str, size: int) -> int:
    """`size` envelopes, or fewer on moto (see MOTO_BACKLOG): the same test, a smaller load."""
    return min(size, MOTO_BACKLOG) if transport == "sqs" else size


def actor(
    name: str,
    handler: str,
    *,
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    timeout: str | None = None,
    resiliency: dict[str, Any] | None = None,
) -> ActorManifest:
    if timeout is not None:
        resiliency = {**(resiliency or {}), "actorTimeout": timeout}
    return ActorManifest(
        name=name,
        handler=handler,
        source="test",
        concurrency=concurrency,
        env=env or {},
        actor_timeout=timeout,
        resiliency=resiliency,
    )


class RunningPipeline:
    def __init__(self, pipeline: LocalPipeline, transport: Broker, log_path: Path) -> None:
        self.pipeline = pipeline
        self.transport = transport
        self.log_path = log_path
        self.results_dir = pipeline.state_dir / "results"
        self.sump_dir = pipeline.state_dir / "sump"

    async def send(
        self,
        route: list[str],
        payload: Any,
        *,
        envelope_id: str | None = None,
        headers: dict[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        envelope_id = envelope_id or str(uuid.uuid4())
        body = {
            "id": envelope_id,
            "route": {"prev": [], "curr": route[0], "next": route[1:]},
            "headers": headers or {},
            # As `asya send` writes it; a test may pass its own.
            "status": {"phase": "pending", "actor": route[0], "attempt": 1, "max_attempts": 1},
            "payload": payload,
            **extra,
        }
        await self.send_raw(route[0], json.dumps(body).encode())
        return envelope_id

    async def send_raw(self, actor_name: str, body: bytes) -> None:
        await self.transport.send(self.pipeline.queue(actor_name), body)

    def stored(self, envelope_id: str) -> dict[str, Any] | None:
        path = self.results_dir / records.key(envelope_id)
        return json.loads(path.read_text()) if path.exists() else None

    async def result(self, envelope_id: str, timeout: float = RESULT_TIMEOUT_S) -> dict[str, Any]:
        found = await self.results([envelope_id], timeout=timeout)
        return found[envelope_id]

    async def results(
        self, ids: Iterable[str], *, timeout: float = RESULT_TIMEOUT_S
    ) -> dict[str, dict[str, Any]]:
        wanted = set(ids)
        found: dict[str, dict[str, Any]] = {}

        def all_stored() -> bool:
            for envelope_id in wanted - found.keys():
                stored = self.stored(envelope_id)
                if stored is not None:
                    found[envelope_id] = stored
            return len(found) == len(wanted)

        def missing() -> str:
            left = sorted(wanted - found.keys())
            return f"{len(left)} missing (first: {left[:5]}); log tail:\n{self.log_tail()}"

        await eventually(
            all_stored,
            what=f"{len(wanted)} results",
            timeout=timeout,
            interval=0.05,
            details=missing,
        )
        return found

    def sump_records(self) -> list[dict[str, Any]]:
        if not self.sump_dir.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.sump_dir.glob("*.json"))]

    async def wait_sump(
        self, count: int, timeout: float = RESULT_TIMEOUT_S
    ) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []

        def enough() -> bool:
            records[:] = self.sump_records()
            return len(records) >= count

        def held() -> str:
            return f"x-sump holds {len(records)}; log tail:\n{self.log_tail()}"

        await eventually(
            enough, what=f"{count} x-sump records", timeout=timeout, interval=0.05, details=held
        )
        return records

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


StartPipeline = Callable[..., Awaitable[RunningPipeline]]


@pytest.fixture(
    params=[
        "local",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("sqs", marks=pytest.mark.sqs),
        pytest.param("pubsub", marks=pytest.mark.pubsub),
    ]
)
def transport_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each broker, started if needed; its settings go into our environment, from which
    the pipeline's processes inherit them."""
    kind: str = request.param
    if kind == "rabbitmq":
        request.getfixturevalue("rabbitmq_url")
    elif kind == "sqs":
        request.getfixturevalue("aws_env")
        monkeypatch.setenv("ASYA_SQS_ENDPOINT", request.getfixturevalue("moto_server").url)
    elif kind == "pubsub":
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", request.getfixturevalue("pubsub_emulator").host)
        monkeypatch.setenv("ASYA_PUBSUB_PROJECT", "asya-test")
    return kind


@pytest.fixture
async def start_pipeline(transport_kind: str, tmp_path: Path) -> AsyncIterator[StartPipeline]:
    running: list[RunningPipeline] = []

    async def start(
        actors: list[ActorManifest],
        *,
        prepare: Callable[[LocalPipeline], None] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> RunningPipeline:
        log_path = tmp_path / f"pipeline-{len(running)}.log"
        log = log_path.open("w")
        pipeline = LocalPipeline(
            actors,
            transport=transport_kind,
            state_dir=tmp_path / f"state-{len(running)}",
            namespace=f"t{uuid.uuid4().hex[:8]}",
            workdir=HANDLERS,
            out=log,
            extra_env=extra_env,
        )
        if prepare is not None:
            prepare(pipeline)
        transport = pipeline.open_transport()
        await transport.__aenter__()
        handle = RunningPipeline(pipeline, transport, log_path)
        running.append(handle)
        try:
            await pipeline.start(READY_TIMEOUT_S)
        except Exception as exc:
            raise AssertionError(f"pipeline did not start: {exc}\n{handle.log_tail()}") from exc
        return handle

    yield start
    for handle in running:
        await handle.pipeline.stop()
        if transport_kind != "local":
            await handle.pipeline.delete_queues()
        await handle.transport.close()
