"""Fan-out and x-join through real pipelines: runtimes, sidecars, the crew, the join store.

Every test runs what `asya dev` runs (LocalPipeline) on each broker; the big ones push 1,000
parts through two x-join processes sharing one store, with redeliveries forced by killing
x-join in the middle of the join.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from asya_cli import dev_plan
from asya_cli.local_pipeline import LocalPipeline
from asya_crew.joinstore import open_join_store
from asya_shared import env, joins, names
from tests.support.pipeline import RunningPipeline, StartPipeline, actor, backlog
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

SPLIT_ROUTE = ["split", "shout", "x-join", "combine"]
# The first test runs on every broker (x-join publishes through each); the decisions after
# it run on the embedded transport and on RabbitMQ, which the issue names, to keep the
# suite's time.
LOCAL_AND_RABBITMQ = pytest.mark.parametrize(
    "transport_kind",
    ["local", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
    indirect=True,
)
FAST_SWEEP = {env.JOIN_SWEEP_INTERVAL: "0.3s", env.JOIN_LEASE: "5s"}


def words_pipeline() -> list[Any]:
    return [
        actor("split", "fanin.split"),
        actor("shout", "fanin.shout", concurrency=4),
        actor("combine", "fanin.combine"),
    ]


async def join_store_held(pipeline: RunningPipeline) -> tuple[int, int]:
    store = open_join_store(dev_plan.join_store_url(pipeline.pipeline.state_dir))
    await store.open()
    try:
        return await store.held()
    finally:
        await store.close()


async def test_a_fanout_is_joined_in_index_order_under_the_origin_id(
    start_pipeline: StartPipeline,
) -> None:
    running = await start_pipeline(words_pipeline(), extra_env=FAST_SWEEP)
    task = await running.send(SPLIT_ROUTE, {"text": "one two three four"})

    joined = await running.result(task)

    assert joined["status"]["phase"] == "succeeded"
    assert joined["payload"]["results"] == ["ONE", "TWO", "THREE", "FOUR"]
    assert joined["payload"]["combined"] == "ONE TWO THREE FOUR"
    assert joined["payload"]["text"] == "one two three four"  # the splitter's own input
    assert joined["route"]["prev"] == ["split", "shout", "x-join", "combine"]
    # The parts never reach x-sink: x-join took them; and nothing stays in the store.
    assert all(running.stored(f"{task}-{i}") is None for i in range(4))
    assert await join_store_held(running) == (0, 0)


@LOCAL_AND_RABBITMQ
async def test_a_failed_part_fails_the_join_at_once_with_join_incomplete(
    start_pipeline: StartPipeline,
) -> None:
    running = await start_pipeline(words_pipeline(), extra_env=FAST_SWEEP)
    # A long timeout: the failure must be decided when the failed part comes, not then.
    task = await running.send(SPLIT_ROUTE, {"text": "ok boom fine", "join": {"timeout": "1h"}})

    (record,) = await running.wait_sump(1)

    assert record["id"] == task
    assert record["status"]["reason"] == joins.JOIN_INCOMPLETE
    assert "1 (ValueError: cannot shout boom)" in record["status"]["error"]["message"]
    assert record["payload"]["results"] == ["OK", None, "FINE"]
    # x-sink's record of the failure shows the step the join left undone.
    stored = running.stored(task)
    assert stored is not None
    assert stored["route"]["next"] == ["combine"]
    # The failed part itself is recorded by x-sink, under its own id.
    part = running.stored(f"{task}-1")
    assert part is not None
    assert part["status"]["phase"] == "failed"
    assert await join_store_held(running) == (0, 0)


@LOCAL_AND_RABBITMQ
async def test_partial_policy_goes_on_with_nulls_after_the_deadline(
    start_pipeline: StartPipeline,
) -> None:
    running = await start_pipeline(words_pipeline(), extra_env=FAST_SWEEP)
    options = {"policy": "partial", "timeout": "2s", "into": "/out/shouted"}
    task = await running.send(SPLIT_ROUTE, {"text": "a lost boom b", "join": options})

    joined = await running.result(task)

    assert joined["status"]["phase"] == "succeeded"
    assert joined["payload"]["out"] == {"shouted": ["A", None, None, "B"], "missing": [1, 2]}
    assert joined["payload"]["combined"] == "A None None B"
    assert await join_store_held(running) == (0, 0)


@LOCAL_AND_RABBITMQ
async def test_a_part_that_never_arrives_fails_the_join_at_its_deadline(
    start_pipeline: StartPipeline,
) -> None:
    running = await start_pipeline(words_pipeline(), extra_env=FAST_SWEEP)
    task = await running.send(SPLIT_ROUTE, {"text": "x lost", "join": {"timeout": "1s"}})

    (record,) = await running.wait_sump(1)

    assert record["id"] == task
    assert record["status"]["reason"] == joins.JOIN_INCOMPLETE
    assert "never arrived: [1]" in record["status"]["error"]["message"]


@LOCAL_AND_RABBITMQ
async def test_nested_fanout_joins_inner_then_outer(start_pipeline: StartPipeline) -> None:
    running = await start_pipeline(
        [
            actor("split", "fanin.split"),
            actor("chunk", "fanin.chunk"),
            actor("letter", "fanin.letter", concurrency=4),
            actor("glue", "fanin.glue"),
            actor("combine", "fanin.combine"),
        ],
        extra_env=FAST_SWEEP,
    )
    route = ["split", "chunk", "letter", "x-join", "glue", "x-join", "combine"]
    task = await running.send(route, {"text": "ab cde"})

    joined = await running.result(task)

    assert joined["payload"]["results"] == ["AB", "CDE"]
    assert joined["payload"]["combined"] == "AB CDE"


@LOCAL_AND_RABBITMQ
async def test_duplicated_and_redelivered_parts_still_give_one_joined_envelope(
    start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    """Every part is sent to x-join a second time, by hand, after the join was done:
    nothing more comes out of it."""
    calls = tmp_path / "calls.txt"
    running = await start_pipeline(
        [
            actor("split", "fanin.split_n"),
            actor("shout", "fanin.shout"),
            actor("count", "fanin.record_call"),
        ],
        extra_env={**FAST_SWEEP, "ASYA_TEST_CALLS_FILE": str(calls)},
    )
    task = str(uuid.uuid4())
    await running.send([*SPLIT_ROUTE[:3], "count"], {"n": 5}, envelope_id=task)
    joined = await running.result(task)
    assert joined["payload"] == {"count": 5, "sum": 20}

    for index in range(5):
        part = _part_envelope(task, index, count=5)
        await running.send_raw(names.JOIN, json.dumps(part).encode())
    # A fresh join sent after them is decided too: x-join got past the duplicates.
    later = await running.send([*SPLIT_ROUTE[:3], "count"], {"n": 2})
    await running.result(later)

    assert calls.read_text().split() == [task, later]
    assert await join_store_held(running) == (0, 0)


def _part_envelope(origin: str, index: int, *, count: int) -> dict[str, Any]:
    level = {
        "origin": origin,
        "index": index,
        "count": count,
        "into": "/results",
        "policy": "fail",
        "deadline_at": "2099-01-01T00:00:00.000Z",
    }
    return {
        "id": f"{origin}-{index}",
        "parent_id": origin,
        "route": {"prev": ["split", "shout"], "curr": "x-join", "next": ["count"]},
        "headers": {joins.PART_HEADER: [level]},
        "status": {"phase": "pending", "actor": "x-join", "attempt": 1, "max_attempts": 1},
        "payload": {"i": index},
    }


# --------------------------------------------------------------- big joins, two replicas


def second_join_replica(store_url: str | None) -> Any:
    """A `prepare` step: one more x-join (runtime + sidecar) on the same queue and store,
    and the store moved to `store_url` when given."""

    def prepare(pipeline: LocalPipeline) -> None:
        specs = list(pipeline.specs)
        if store_url is not None:
            specs = [
                dataclasses.replace(s, env={**s.env, env.JOIN_STORE: store_url})
                if s.actor == names.JOIN and s.role == "runtime"
                else s
                for s in specs
            ]
        extra = []
        for spec in specs:
            if spec.actor != names.JOIN:
                continue
            socket_dir = spec.env[env.SOCKET_DIR] + "-2"
            changed = {**spec.env, env.SOCKET_DIR: socket_dir}
            health = spec.health_port
            if spec.role == "sidecar":
                assert health is not None
                health = _free_port()
                changed[env.METRICS_PORT] = str(health)
            extra.append(
                dataclasses.replace(spec, actor="x-join-2", env=changed, health_port=health)
            )
        pipeline.specs = specs + extra

    return prepare


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("transport_kind", ["local"], indirect=True)
async def test_a_thousand_parts_two_replicas_killed_mid_join_embedded_sqlite(
    start_pipeline: StartPipeline, transport_kind: str, tmp_path: Path
) -> None:
    await thousand_parts_killed_mid_join(start_pipeline, transport_kind, tmp_path, None)


@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.parametrize("transport_kind", ["rabbitmq"], indirect=True)
async def test_a_thousand_parts_two_replicas_killed_mid_join_rabbitmq_postgres(
    start_pipeline: StartPipeline, transport_kind: str, tmp_path: Path, own_database: str
) -> None:
    await thousand_parts_killed_mid_join(start_pipeline, transport_kind, tmp_path, own_database)


async def thousand_parts_killed_mid_join(
    start_pipeline: StartPipeline, transport_kind: str, tmp_path: Path, store_url: str | None
) -> None:
    """1,000 parts, two x-join processes on one queue and one store (PostgreSQL on
    RabbitMQ, as in a cluster; SQLite on the embedded transport), and both killed once
    while the join fills: one replica's runtime (its calls in flight fail and come back)
    and the other's sidecar (what it held unacknowledged comes back). One joined envelope,
    with every part, reaches the last actor exactly once."""
    calls = tmp_path / "calls.txt"
    running = await start_pipeline(
        [
            actor("split", "fanin.split_n"),
            actor("work", "fanin.shout", concurrency=8),
            actor("count", "fanin.record_call"),
        ],
        prepare=second_join_replica(store_url),
        extra_env={**FAST_SWEEP, "ASYA_TEST_CALLS_FILE": str(calls)},
    )
    parts = backlog(transport_kind, 1000)
    store = open_join_store(store_url or dev_plan.join_store_url(running.pipeline.state_dir))
    await store.open()
    try:
        task = await running.send(["split", "work", "x-join", "count"], {"n": parts})

        async def filling() -> bool:
            _, held_parts = await store.held()
            return held_parts >= parts // 4

        await eventually(filling, what="a quarter of the parts in the join store", timeout=120)
        supervisor = running.pipeline.supervisor
        for name in ("x-join/runtime", "x-join-2/sidecar"):
            os.kill(supervisor.pid(name), signal.SIGKILL)

        joined = await running.result(task, timeout=240)

        assert joined["payload"] == {"count": parts, "sum": sum(2 * i for i in range(parts))}
        assert calls.read_text().split() == [task]
        assert supervisor.restarts("x-join/runtime") >= 1
        assert await store.held() == (0, 0)
    finally:
        await store.close()


@pytest.mark.sqs
@pytest.mark.parametrize("transport_kind", ["sqs"], indirect=True)
async def test_a_joined_envelope_over_the_transports_limit_fails_with_oversize_result(
    start_pipeline: StartPipeline, transport_kind: str
) -> None:
    """SQS takes 1 MiB: forty parts of 30 kB each fit, their join does not."""
    running = await start_pipeline(
        [
            actor("split", "fanin.split_n"),
            actor("fat", "fanin.fat"),
            actor("combine", "fanin.combine"),
        ],
        extra_env=FAST_SWEEP,
    )
    task = await running.send(["split", "fat", "x-join", "combine"], {"n": 40})

    (record,) = await running.wait_sump(1)

    assert record["id"] == task
    assert record["status"]["reason"] == "OversizeResult"
    assert "Join references instead of data" in record["status"]["error"]["message"]
    assert await join_store_held(running) == (0, 0)
