"""The gateway's HTTP APIs, in process on the real SQLite store and real transports: the
public tasks API (every status code of the issue), the internal report endpoint, health,
readiness, metrics, retention and the server settings."""

from __future__ import annotations

import asyncio
import datetime
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import asya_transports as transports
from asya_gateway import server as server_module
from asya_gateway.app import MAX_LIMIT
from asya_gateway.flows import parse_flows
from asya_gateway.server import (
    GatewaySettings,
    SettingsError,
    delete_expired,
    parse_retention,
    retention_loop,
)
from asya_gateway.store.base import TaskNotFound
from asya_gateway.store.sqlite import SQLiteStore
from asya_shared import names
from asya_transports.local import LocalTransport
from asya_transports.rabbitmq import RabbitMQTransport
from tests.gateway.gateway_fixtures import (
    NAMESPACE,
    Harness,
    harness,
    local_transport,
    make_harness,
    receive_envelope,
    report,
    sqlite_store,
)
from tests.support.services import free_port
from tests.support.waiting import eventually

__all__ = ["harness", "local_transport", "make_harness", "sqlite_store"]  # fixtures used here

TASK_KEYS = {
    "id", "status", "route", "actor", "progress", "result", "error", "reason", "created_at",
    "updated_at", "deadline_at",
}  # fmt: skip
FLOWS = parse_flows(
    {
        "flows": [
            {"name": "two-steps", "route": ["a", "b"], "timeout": "1h"},
            {
                "name": "typed",
                "route": ["a"],
                "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
            },
        ]
    },
    "test flows",
)


def error_of(response: httpx.Response) -> dict[str, str]:
    """The standard error body, checked to be exactly that shape."""
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    error: dict[str, str] = body["error"]
    return error


# ------------------------------------------------------------------------------- submit


async def test_submit_stores_the_task_and_publishes_its_envelope(harness: Harness) -> None:
    response = await harness.submit(
        {"route": ["a", "b"], "payload": {"text": "hi"}, "headers": {"k": "v"}, "timeout": "5m"}
    )
    assert response.status_code == 201
    task = response.json()
    assert set(task) == TASK_KEYS
    assert response.headers["location"] == f"/v1/tasks/{task['id']}"
    assert (task["status"], task["actor"], task["progress"]) == ("pending", "a", 0.0)
    assert task["route"] == {"prev": [], "curr": "a", "next": ["b"]}
    created = datetime.datetime.fromisoformat(task["created_at"])
    deadline = datetime.datetime.fromisoformat(task["deadline_at"])
    assert deadline - created == datetime.timedelta(minutes=5)

    envelope = await receive_envelope(harness.transport, "a")
    assert envelope["id"] == task["id"]
    assert envelope["route"] == task["route"]
    assert envelope["payload"] == {"text": "hi"}
    assert envelope["headers"]["k"] == "v"
    assert envelope["headers"]["traceparent"].startswith("00-")
    assert envelope["status"]["phase"] == "pending"
    assert envelope["status"]["deadline_at"] == task["deadline_at"]
    assert (await harness.public.get(f"/v1/tasks/{task['id']}")).json() == task


async def test_a_repeated_id_returns_the_task_and_publishes_nothing(harness: Harness) -> None:
    body = {"route": ["a"], "payload": 1, "id": "order-42"}
    first = await harness.submit(body)
    assert first.status_code == 201
    again = await harness.submit({**body, "payload": "different"})
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["location"] == "/v1/tasks/order-42"
    assert await harness.depth("a") == 1


async def test_a_flow_is_submitted_by_name(make_harness: Callable[..., Any]) -> None:
    harness_: Harness = await make_harness(flows=FLOWS)
    response = await harness_.submit({"flow": "two-steps", "payload": {"n": 1}})
    assert response.status_code == 201
    assert response.json()["route"] == {"prev": [], "curr": "a", "next": ["b"]}
    assert response.json()["deadline_at"] is not None
    assert (await receive_envelope(harness_.transport, "a"))["id"] == response.json()["id"]

    unknown = await harness_.submit({"flow": "nope", "payload": 1})
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "unknown_flow"
    invalid = await harness_.submit({"flow": "typed", "payload": {"n": "one"}})
    assert invalid.status_code == 400
    assert "$.n" in error_of(invalid)["message"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{", "invalid_json"),
        (b'{"route": ["a"]}', "invalid_request"),  # no payload
        (b'{"payload": 1}', "invalid_request"),  # neither route nor flow
        (b'{"route": ["a"], "flow": "x", "payload": 1}', "invalid_request"),  # both
        (b'{"route": [], "payload": 1}', "invalid_route"),
        (b'{"route": ["a", "NOT_OK"], "payload": 1}', "invalid_actor"),
        (b'{"route": ["a"], "payload": 1, "timeout": "soon"}', "invalid_timeout"),
    ],
)
async def test_a_bad_submit_is_400_and_publishes_nothing(
    harness: Harness, content: bytes, code: str
) -> None:
    response = await harness.public.post("/v1/tasks", content=content)
    assert response.status_code == 400
    assert error_of(response)["code"] == code
    assert await harness.depth("a") == 0
    assert (await harness.public.get("/v1/tasks")).json()["tasks"] == []


async def test_a_body_over_the_brokers_limit_is_413(
    make_harness: Callable[..., Any], tmp_path: Path
) -> None:
    async with LocalTransport(tmp_path / "small", max_message_bytes=2000) as small:
        await small.ensure_queue(names.queue_name(NAMESPACE, "a"))
        harness_: Harness = await make_harness(transport=small)
        # The body itself is over the limit: refused before it is read in full.
        big = await harness_.submit({"route": ["a"], "payload": "x" * 3000})
        assert big.status_code == 413
        assert error_of(big)["code"] == "too_large"
        assert "2000 bytes" in error_of(big)["message"]
        # The body fits, the envelope (with its route, status and headers) does not.
        near = await harness_.submit({"route": ["a"], "payload": "x" * 1700})
        assert near.status_code == 413
        assert "the envelope is" in error_of(near)["message"]
        assert await small.queue_depth(names.queue_name(NAMESPACE, "a")) == 0
        assert (await harness_.public.get("/v1/tasks")).json()["tasks"] == []


async def test_a_first_actor_without_a_queue_fails_the_task(harness: Harness) -> None:
    response = await harness.submit({"route": ["ghost"], "payload": 1, "id": "t-ghost"})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "unknown_actor"
    assert "'ghost'" in error["message"]
    task = (await harness.public.get("/v1/tasks/t-ghost")).json()
    assert (task["status"], task["reason"]) == ("failed", "UnknownActor")
    assert task["error"]["type"] == "QueueNotFound"


async def test_a_broker_outage_answers_503_and_records_the_task_failed(
    make_harness: Callable[..., Any],
) -> None:
    # Nothing listens on this port: every connection attempt is refused.
    down = RabbitMQTransport(f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    harness_: Harness = await make_harness(transport=down)
    try:
        response = await harness_.submit({"route": ["a"], "payload": 1, "id": "t-outage"})
        assert response.status_code == 503
        error = error_of(response)
        assert error["code"] == "broker_unavailable"
        assert "t-outage" in error["message"]
        assert "PublishFailed" in error["message"]
        assert response.headers["retry-after"]
        task = (await harness_.public.get("/v1/tasks/t-outage")).json()
        assert (task["status"], task["reason"]) == ("failed", "PublishFailed")
        assert task["error"]["type"] == "TransportUnavailable"
        assert "TransportError" in task["error"]["mro"]
        pending = await harness_.public.get("/v1/tasks", params={"status": "pending"})
        assert pending.json()["tasks"] == []  # nothing stuck
        ready = await harness_.public.get("/readyz")
        assert ready.status_code == 503
        assert "broker:" in error_of(ready)["message"]
        assert "store:" not in error_of(ready)["message"]
        metrics = (await harness_.public.get("/metrics")).text
        assert 'asya_gateway_tasks_finished_total{status="failed"} 1.0' in metrics
    finally:
        await down.close()


@pytest.fixture
async def rabbitmq_transport(rabbitmq_url: str) -> AsyncIterator[transports.Broker]:
    transport = RabbitMQTransport(rabbitmq_url)
    async with transport:
        queue = names.queue_name(NAMESPACE, "gw-api-a")
        await transport.delete_queue(queue)
        await transport.ensure_queue(queue)
        yield transport
        await transport.delete_queue(queue)


async def test_submit_publishes_to_rabbitmq(
    make_harness: Callable[..., Any], rabbitmq_transport: transports.Broker
) -> None:
    harness_: Harness = await make_harness(transport=rabbitmq_transport)
    response = await harness_.submit({"route": ["gw-api-a", "b"], "payload": {"n": 7}})
    assert response.status_code == 201
    envelope = await receive_envelope(rabbitmq_transport, "gw-api-a")
    assert envelope["id"] == response.json()["id"]
    assert envelope["route"] == {"prev": [], "curr": "gw-api-a", "next": ["b"]}
    assert envelope["payload"] == {"n": 7}
    assert (await harness_.public.get("/readyz")).status_code == 200


# --------------------------------------------------------------------------- read, list


async def test_an_unknown_task_is_404(harness: Harness) -> None:
    for method in ("GET", "DELETE"):
        response = await harness.public.request(method, "/v1/tasks/nope")
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"
    response = await harness.public.get("/v1/tasks/nope/events")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


async def submit_many(harness: Harness, count: int) -> list[str]:
    ids = []
    for index in range(count):
        response = await harness.submit({"route": ["a"], "payload": index})
        assert response.status_code == 201
        ids.append(response.json()["id"])
    return ids


async def test_the_list_is_newest_first_in_pages(harness: Harness) -> None:
    ids = await submit_many(harness, 5)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await harness.public.get("/v1/tasks", params=params)).json()
        assert set(page) == {"tasks", "next_cursor"}
        assert len(page["tasks"]) <= 2
        seen += [task["id"] for task in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    everything = (await harness.public.get("/v1/tasks")).json()
    assert [task["id"] for task in everything["tasks"]] == list(reversed(ids))
    assert everything["next_cursor"] is None


async def test_the_list_filters_by_status(harness: Harness) -> None:
    ids = await submit_many(harness, 3)
    assert (await harness.public.delete(f"/v1/tasks/{ids[1]}")).status_code == 200
    canceled = (await harness.public.get("/v1/tasks", params={"status": "canceled"})).json()
    assert [task["id"] for task in canceled["tasks"]] == [ids[1]]
    pending = (await harness.public.get("/v1/tasks", params={"status": "pending"})).json()
    assert [task["id"] for task in pending["tasks"]] == [ids[2], ids[0]]


async def test_a_limit_over_the_maximum_is_the_maximum(harness: Harness) -> None:
    await submit_many(harness, 2)
    response = await harness.public.get("/v1/tasks", params={"limit": str(MAX_LIMIT + 1)})
    assert response.status_code == 200
    assert len(response.json()["tasks"]) == 2


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"status": "done"}, "invalid_status"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"limit": "-1"}, "invalid_limit"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ],
)
async def test_bad_list_parameters_are_400(
    harness: Harness, params: dict[str, str], code: str
) -> None:
    response = await harness.public.get("/v1/tasks", params=params)
    assert response.status_code == 400
    assert error_of(response)["code"] == code


# ------------------------------------------------------------------------------- cancel


async def test_cancel_is_idempotent_and_refused_once_the_task_ended(harness: Harness) -> None:
    first, second = await submit_many(harness, 2)
    canceled = await harness.public.delete(f"/v1/tasks/{first}")
    assert canceled.status_code == 200
    assert (canceled.json()["status"], canceled.json()["reason"]) == ("canceled", "Canceled")
    again = await harness.public.delete(f"/v1/tasks/{first}")
    assert again.status_code == 200
    assert again.json() == canceled.json()

    done = await harness.report(report(second, "succeeded", curr="a", result={"ok": True}))
    assert done.status_code == 200
    conflict = await harness.public.delete(f"/v1/tasks/{second}")
    assert conflict.status_code == 409
    error = error_of(conflict)
    assert error["code"] == "conflict"
    assert "succeeded" in error["message"]
    metrics = (await harness.public.get("/metrics")).text
    assert 'asya_gateway_tasks_finished_total{status="canceled"} 1.0' in metrics


# ----------------------------------------------------------------------------- internal


async def test_reports_move_the_task_to_its_result(harness: Harness) -> None:
    (task_id,) = await submit_many(harness, 1)
    steps = [
        (report(task_id, "received", curr="a", next_=["b"]), "running", "a", 0.0),
        (report(task_id, "routed", prev=["a"], curr="b"), "running", "b", 0.5),
        (
            report(task_id, "succeeded", prev=["a", "b"], curr="x-sink", result={"answer": 42}),
            "succeeded",
            "x-sink",
            1.0,
        ),
    ]
    for sent, status, actor, progress in steps:
        response = await harness.report(sent)
        assert response.status_code == 200
        assert response.json()["accepted"] == 1
        task = (await harness.public.get(f"/v1/tasks/{task_id}")).json()
        assert (task["status"], task["actor"], task["progress"]) == (status, actor, progress)
    assert task["result"] == {"answer": 42}
    # A late, stale report changes nothing.
    await harness.report(report(task_id, "received", curr="a", next_=["b"]))
    assert (await harness.public.get(f"/v1/tasks/{task_id}")).json() == task


async def test_a_failure_report_carries_the_error(harness: Harness) -> None:
    (task_id,) = await submit_many(harness, 1)
    error = {"type": "ValueError", "mro": ["ValueError", "Exception"], "message": "bad"}
    await harness.report(report(task_id, "failed", reason="RuntimeError", error=error))
    task = (await harness.public.get(f"/v1/tasks/{task_id}")).json()
    assert (task["status"], task["reason"]) == ("failed", "RuntimeError")
    # Normalised: the missing traceback is null, not absent.
    assert task["error"] == {**error, "traceback": None}


async def test_reports_answer_the_ids_canceled_after_the_cursor(harness: Harness) -> None:
    ids = await submit_many(harness, 2)
    assert (await harness.public.delete(f"/v1/tasks/{ids[0]}")).status_code == 200
    first = (await harness.report(cursor=0)).json()
    assert first["accepted"] == 0
    assert first["canceled"] == [ids[0]]
    assert first["canceled_cursor"] > 0
    quiet = (await harness.report(cursor=first["canceled_cursor"])).json()
    assert quiet == {"accepted": 0, "canceled": [], "canceled_cursor": first["canceled_cursor"]}
    assert (await harness.public.delete(f"/v1/tasks/{ids[1]}")).status_code == 200
    later = (await harness.report(cursor=first["canceled_cursor"])).json()
    assert later["canceled"] == [ids[1]]


@pytest.mark.parametrize(
    ("batch", "words"),
    [
        (b"nope", "not valid JSON"),
        ({"reports": {}}, '{"reports": [...]'),
        ({"reports": [], "canceled_cursor": -1}, "canceled_cursor"),
        ({"reports": [], "canceled_cursor": "1"}, "canceled_cursor"),
        ({"reports": [3]}, "reports[0] must be an object"),
        ({"reports": [{**report("t", "received"), "event": "exploded"}]}, "'exploded'"),
        ({"reports": [{**report("t", "received"), "id": ""}]}, "reports[0].id"),
        ({"reports": [{**report("t", "received"), "route": {"curr": "a"}}]}, "route.prev"),
        (
            {"reports": [report("t", "received"), {**report("t", "received"), "attempt": 0}]},
            "reports[1].attempt",
        ),
        ({"reports": [{**report("t", "received"), "at": "yesterday"}]}, "reports[0].at"),
        ({"reports": [{**report("t", "received"), "error": "boom"}]}, "reports[0].error"),
        ({"reports": [report("t", "fly")]}, "reports[0].events"),
        ({"reports": [{**report("t", "received"), "redriven_at": 5}]}, "reports[0].redriven_at"),
    ],
)
async def test_a_malformed_batch_is_400_naming_the_report(
    harness: Harness, batch: Any, words: str
) -> None:
    if isinstance(batch, bytes):
        response = await harness.internal.post("/internal/v1/reports", content=batch)
    else:
        response = await harness.internal.post("/internal/v1/reports", json=batch)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_batch"
    assert words in error["message"]


async def test_a_malformed_batch_applies_nothing(harness: Harness) -> None:
    (task_id,) = await submit_many(harness, 1)
    good = report(task_id, "received", curr="a")
    response = await harness.report(good, {**good, "event": "exploded"})
    assert response.status_code == 400
    assert (await harness.public.get(f"/v1/tasks/{task_id}")).json()["status"] == "pending"


async def test_unknown_report_keys_and_unknown_tasks_are_ignored(harness: Harness) -> None:
    (task_id,) = await submit_many(harness, 1)
    newer = {**report(task_id, "received", curr="a"), "from_the_future": 1}
    response = await harness.report(newer, report("not-ours", "received"))  # type: ignore[arg-type]
    assert response.status_code == 200
    assert response.json()["accepted"] == 2
    assert (await harness.public.get(f"/v1/tasks/{task_id}")).json()["status"] == "running"


async def test_the_internal_port_serves_no_reads(harness: Harness) -> None:
    (task_id,) = await submit_many(harness, 1)
    for path in (f"/v1/tasks/{task_id}", "/v1/tasks", f"/v1/tasks/{task_id}/events", "/metrics"):
        response = await harness.internal.get(path)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"
    wrong_method = await harness.internal.get("/internal/v1/reports")
    assert wrong_method.status_code == 405
    assert error_of(wrong_method)["code"] == "method_not_allowed"
    assert (await harness.internal.get("/healthz")).json() == {"status": "ok"}


# ------------------------------------------------------------------ health and metrics


async def test_health_and_readiness(harness: Harness) -> None:
    assert (await harness.public.get("/healthz")).json() == {"status": "ok"}
    ready = await harness.public.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "store": "ok", "broker": "ok"}


async def test_readiness_names_a_store_that_cannot_answer(harness: Harness) -> None:
    await harness.store.close()
    ready = await harness.public.get("/readyz")
    assert ready.status_code == 503
    assert error_of(ready)["code"] == "not_ready"
    assert "store:" in error_of(ready)["message"]
    assert "broker:" not in error_of(ready)["message"]
    assert (await harness.public.get("/healthz")).status_code == 200  # the process is up
    submitted = await harness.submit({"route": ["a"], "payload": 1})
    assert submitted.status_code == 503
    assert error_of(submitted)["code"] == "store_unavailable"
    assert await harness.depth("a") == 0  # not published without a task


async def test_unknown_paths_answer_the_error_shape(harness: Harness) -> None:
    response = await harness.public.get("/v2/things")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    response = await harness.public.put("/v1/tasks")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


REQUESTS = "asya_gateway_request_duration_seconds_count"


async def test_metrics_count_submits_finishes_batches_and_requests(harness: Harness) -> None:
    (task_id,) = await submit_many(harness, 1)
    await harness.public.get(f"/v1/tasks/{task_id}")
    await harness.report(report(task_id, "succeeded", curr="x-sink", result=1))
    response = await harness.public.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        "asya_gateway_tasks_submitted_total 1.0",
        'asya_gateway_tasks_finished_total{status="succeeded"} 1.0',
        'asya_gateway_tasks_finished_total{status="failed"} 0.0',
        "asya_gateway_report_batches_total 1.0",
        "asya_gateway_reports_total 1.0",
        "asya_gateway_sse_subscribers 0.0",
        REQUESTS + '{code="201",method="POST",route="/v1/tasks"} 1.0',
        REQUESTS + '{code="200",method="GET",route="/v1/tasks/{task_id}"} 1.0',
        'asya_gateway_store_duration_seconds_count{operation="create"} 1.0',
        'asya_gateway_store_duration_seconds_count{operation="apply"} 1.0',
    ):
        assert line in text, line
    # Task ids never become label values.
    assert task_id not in text


# ---------------------------------------------------------------------------- retention


async def test_retention_deletes_only_tasks_finished_long_enough_ago(
    harness: Harness, sqlite_store: SQLiteStore
) -> None:
    old, recent, running = await submit_many(harness, 3)
    await harness.report(
        report(old, "succeeded", curr="x-sink", at="2030-01-01T00:00:00.000Z"),
        report(recent, "succeeded", curr="x-sink", at="2030-01-07T23:00:00.000Z"),
        report(running, "received", at="2029-01-01T00:00:00.000Z"),
    )
    now = datetime.datetime(2030, 1, 8, 1, tzinfo=datetime.UTC)  # cutoff: Jan 1st, 01:00
    deleted = await delete_expired(sqlite_store, 7 * 24 * 3600, now)
    assert deleted == 1
    with pytest.raises(TaskNotFound):
        await sqlite_store.get(old, "")
    assert (await sqlite_store.get(recent, "")).status == "succeeded"
    assert (await sqlite_store.get(running, "")).status == "running"


async def test_the_retention_loop_deletes_at_start(
    harness: Harness, sqlite_store: SQLiteStore
) -> None:
    (task_id,) = await submit_many(harness, 1)
    await harness.report(report(task_id, "failed", at="2030-01-01T00:00:00.000Z"))
    loop = asyncio.create_task(
        retention_loop(
            sqlite_store, 60.0, clock=lambda: datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)
        )
    )
    try:

        async def gone() -> bool:
            try:
                await sqlite_store.get(task_id, "")
            except TaskNotFound:
                return True
            return False

        await eventually(gone, "the retention loop to delete the expired task")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


# ----------------------------------------------------------------------------- settings


def test_settings_default_to_a_local_gateway() -> None:
    settings = GatewaySettings.from_env({})
    assert settings == GatewaySettings(
        host="127.0.0.1",
        port=8080,
        internal_port=8081,
        store_url="sqlite:///.asya/gateway.db",
        retention=7 * 24 * 3600.0,
        namespace="default",
        transport="local",
    )


def test_settings_are_read_from_the_environment() -> None:
    settings = GatewaySettings.from_env(
        {
            "ASYA_GATEWAY_HOST": "0.0.0.0",
            "ASYA_GATEWAY_PORT": "9000",
            "ASYA_GATEWAY_INTERNAL_PORT": "0",
            "ASYA_GATEWAY_STORE": "postgresql://u:p@db:5432/gw",
            "ASYA_GATEWAY_FLOWS": "/etc/asya/flows.yaml",
            "ASYA_GATEWAY_API_KEYS_FILE": "/etc/asya/keys",
            "ASYA_GATEWAY_RETENTION": "2d",
            "ASYA_GATEWAY_INSECURE": "false",
            "ASYA_NAMESPACE": "prod",
            "ASYA_TRANSPORT": "rabbitmq",
        }
    )
    assert settings == GatewaySettings(
        host="0.0.0.0",
        port=9000,
        internal_port=0,
        store_url="postgresql://u:p@db:5432/gw",
        flows_file="/etc/asya/flows.yaml",
        api_keys_file="/etc/asya/keys",
        retention=2 * 24 * 3600.0,
        namespace="prod",
        transport="rabbitmq",
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800.0), ("1.5d", 129600.0), ("36h", 129600.0), ("90m", 5400.0), ("60", 60.0)],
)
def test_retention_is_days_or_a_duration(text: str, seconds: float) -> None:
    assert parse_retention(text) == seconds


@pytest.mark.parametrize("text", ["0", "0d", "d", "7 days", "-1d", "inf"])
def test_a_bad_retention_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="retention"):
        parse_retention(text)


def test_the_default_store_lives_in_the_state_dir() -> None:
    settings = GatewaySettings.from_env({"ASYA_STATE_DIR": "/tmp/state"})
    assert settings.store_url == "sqlite:////tmp/state/gateway.db"


def test_bad_settings_are_all_listed() -> None:
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env(
            {
                "ASYA_GATEWAY_PORT": "http",
                "ASYA_GATEWAY_INTERNAL_PORT": "70000",
                "ASYA_GATEWAY_RETENTION": "forever",
                "ASYA_GATEWAY_INSECURE": "maybe",
                "ASYA_TRANSPORT": "kafka",
                "ASYA_NAMESPACE": "Prod",
            }
        )
    message = str(caught.value)
    for words in (
        "ASYA_GATEWAY_PORT='http'",
        "ASYA_GATEWAY_INTERNAL_PORT='70000'",
        "ASYA_GATEWAY_RETENTION",
        "ASYA_GATEWAY_INSECURE='maybe'",
        "transport 'kafka'",
        "namespace 'Prod'",
    ):
        assert words in message, words


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "gateway.example.com", "::"])
def test_a_reachable_host_needs_keys_or_insecure(host: str) -> None:
    with pytest.raises(SettingsError, match="--insecure"):
        GatewaySettings.from_env({"ASYA_GATEWAY_HOST": host})
    assert GatewaySettings.from_env({"ASYA_GATEWAY_HOST": host, "ASYA_GATEWAY_INSECURE": "1"})
    assert GatewaySettings.from_env(
        {"ASYA_GATEWAY_HOST": host, "ASYA_GATEWAY_API_KEYS_FILE": "/keys"}
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_hosts_need_no_keys(host: str) -> None:
    assert GatewaySettings.from_env({"ASYA_GATEWAY_HOST": host}).host == host


def test_the_two_ports_must_differ() -> None:
    with pytest.raises(SettingsError, match="both 9000"):
        GatewaySettings(port=9000, internal_port=9000).check()


async def test_connections_to_either_port_are_accepted_with_nodelay() -> None:
    # Without TCP_NODELAY a kept-alive client (the CLI, a sidecar's reporter) waits ~40 ms
    # for each response's last segment: asyncio sets it only on sockets that say TCP.
    accepted: asyncio.Queue[int] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        await accepted.put(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(
        on_connect, sock=server_module._listen("127.0.0.1", 0, "public API")
    )
    async with server:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await asyncio.wait_for(accepted.get(), 30) != 0
        finally:
            writer.close()
