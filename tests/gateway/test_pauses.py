"""Pause and resume through a served gateway (real uvicorn, SQLite store, local transport;
one test on RabbitMQ): x-pause's internal `POST /internal/v1/pauses`, a person's `POST
/v1/tasks/<id>/resume`, expiry by the sweep, cancel of a paused task, the pause in SSE, and
x-join's progress reports. Tests play the sidecars and x-pause over HTTP, and read what the
gateway published from the real queues."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asya_gateway.server import GatewayServer, GatewaySettings
from asya_gateway.store.urls import sqlite_url
from asya_shared import names, pauses, wire
from asya_transports.local import LocalTransport
from asya_transports.rabbitmq import RabbitMQTransport
from tests.gateway.gateway_fixtures import (
    NAMESPACE,
    SERVED_STATE,
    ServeGateway,
    post_reports,
    read_events,
    receive_envelope,
    report,
    serve_gateway,
)
from tests.support.waiting import eventually

__all__ = ["serve_gateway"]  # fixtures used here

ROUTE = ["a", names.PAUSE, "b"]
APPROVAL = {
    "prompt": "Send this reply?",
    "fields": [
        {"name": "approved", "type": "boolean", "prompt": "OK?"},
        {"name": "reply", "payload_key": "/draft/text", "required": False},
    ],
}
TIMEOUT_S = 60.0


def stamp(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Pipeline:
    """A served gateway, and a test playing the actors of ROUTE around it."""

    def __init__(self, server: GatewayServer, http: httpx.AsyncClient, broker: Any) -> None:
        self.server = server
        self.http = http
        self.broker = broker

    async def submit(self, route: list[str] | None = None, **body: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.server.url}/v1/tasks",
            json={"route": route or ROUTE, "payload": {"draft": {"text": "hi"}}, **body},
        )
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task

    async def at_x_pause(
        self,
        route: list[str] | None = None,
        *,
        spec: Any = APPROVAL,
        paused_for: float = 600.0,
        expires_in: float = 3600.0,
        **body: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Submit, play `a` (its envelope read from its queue, passed on), and return the
        task and the envelope as x-pause receives it, not yet paused."""
        route = route or ROUTE
        task = await self.submit(route, **body)
        envelope = await receive_envelope(self.broker, route[0])
        envelope["route"] = {"prev": [route[0]], "curr": route[1], "next": route[2:]}
        if spec is not None:
            envelope["headers"][pauses.PAUSE_HEADER] = spec
        envelope["headers"][pauses.PAUSE_TIMEOUT_HEADER] = "1h"
        await post_reports(
            self.http, self.server, report(task["id"], "routed", prev=route[:1], curr=route[1])
        )
        paused_at = now() - datetime.timedelta(seconds=paused_for)
        self.pause_body = {
            "envelope": envelope,
            "pause": pauses.parse_spec(spec).to_json(),
            "paused_at": stamp(paused_at),
            "expires_at": stamp(paused_at + datetime.timedelta(seconds=paused_for + expires_in)),
        }
        return task, envelope

    async def pause(self, body: Any = None) -> httpx.Response:
        return await self.http.post(
            f"{self.server.internal_url}/internal/v1/pauses", json=body or self.pause_body
        )

    async def paused(self, route: list[str] | None = None, **options: Any) -> dict[str, Any]:
        task, _ = await self.at_x_pause(route, **options)
        response = await self.pause()
        assert response.status_code == 200, response.text
        paused: dict[str, Any] = response.json()["task"]
        assert paused["id"] == task["id"]
        return paused

    async def resume(self, task_id: str, body: Any) -> httpx.Response:
        return await self.http.post(f"{self.server.url}/v1/tasks/{task_id}/resume", json=body)

    async def get(self, task_id: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.server.url}/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        return task


@pytest.fixture
async def pipeline(serve_gateway: ServeGateway, tmp_path: Path) -> AsyncIterator[Pipeline]:
    server = await serve_gateway(republish_every_s=0.05)
    async with (
        httpx.AsyncClient(timeout=TIMEOUT_S) as http,
        LocalTransport(tmp_path / SERVED_STATE) as broker,
    ):
        yield Pipeline(server, http, broker)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# ------------------------------------------------------------------------------- pause


async def test_a_pause_shows_the_task_paused_with_what_it_asks(pipeline: Pipeline) -> None:
    task = await pipeline.paused()

    got = await pipeline.get(task["id"])
    assert (got["status"], got["actor"]) == ("paused", names.PAUSE)
    pause = got["pause"]
    assert pause["prompt"] == "Send this reply?"
    assert [field["name"] for field in pause["fields"]] == ["approved", "reply"]
    assert pause["fields"][1]["payload_key"] == "/draft/text"
    assert (pause["paused_at"], pause["expires_at"]) == (
        pipeline.pause_body["paused_at"], pipeline.pause_body["expires_at"]
    )  # fmt: skip
    # Idempotent: x-pause redelivered posts the same pause again.
    again = await pipeline.pause()
    assert again.status_code == 200
    assert again.json()["task"] == got


async def test_the_pause_endpoint_refuses_unknown_ended_and_bad_pauses(
    pipeline: Pipeline,
) -> None:
    task, envelope = await pipeline.at_x_pause()
    unknown = {**pipeline.pause_body, "envelope": {**envelope, "id": "nobody-submitted-this"}}
    response = await pipeline.pause(unknown)
    assert response.status_code == 404
    assert error_of(response)["code"] == "task_not_found"
    assert "only a task submitted through the gateway can pause" in error_of(response)["message"]

    bad_spec = {**pipeline.pause_body, "pause": {"fields": [{"name": "x", "type": "date"}]}}
    response = await pipeline.pause(bad_spec)
    assert response.status_code == 400
    assert "pause: x-asya-pause.fields[0].type 'date'" in error_of(response)["message"]
    response = await pipeline.pause({**pipeline.pause_body, "expires_at": "never"})
    assert response.status_code == 400
    assert "expires_at must be an RFC 3339 time" in error_of(response)["message"]

    await pipeline.http.delete(f"{pipeline.server.url}/v1/tasks/{task['id']}")
    response = await pipeline.pause()
    assert response.status_code == 409
    assert error_of(response)["code"] == "task_ended"


# ------------------------------------------------------------------------------ resume


async def test_a_resume_sends_the_merged_payload_on_after_x_pause(pipeline: Pipeline) -> None:
    task = await pipeline.paused(timeout="2h")
    deadline = parse(task["deadline_at"])

    response = await pipeline.resume(task["id"], {"input": {"approved": True, "reply": "Yes!"}})

    assert response.status_code == 200, response.text
    resumed = response.json()
    assert (resumed["status"], resumed["actor"]) == ("running", "b")
    assert "pause" not in resumed
    continuation = await receive_envelope(pipeline.broker, "b")
    assert continuation["id"] == task["id"]
    assert continuation["route"] == {"prev": ["a", names.PAUSE], "curr": "b", "next": []}
    assert continuation["payload"] == {"draft": {"text": "Yes!"}, "approved": True}
    assert pauses.PAUSE_HEADER not in continuation["headers"]
    assert pauses.PAUSE_TIMEOUT_HEADER not in continuation["headers"]
    assert continuation["status"]["phase"] == "pending"
    # Paused about 600 s: the deadline moved that much (and the task's with it).
    shifted = parse(continuation["status"]["deadline_at"]) - deadline
    assert 600 <= shifted.total_seconds() < 660
    assert resumed["deadline_at"] == continuation["status"]["deadline_at"]
    # Done once: the second resume is refused, and nothing else was published.
    again = await pipeline.resume(task["id"], {"input": {"approved": False}})
    assert again.status_code == 409
    assert error_of(again)["code"] == "not_paused"
    assert "is running, not paused" in error_of(again)["message"]
    assert await pipeline.broker.queue_depth(names.queue_name(NAMESPACE, "b")) == 0
    # x-pause's sidecar reporting late changes nothing.
    await post_reports(
        pipeline.http,
        pipeline.server,
        report(task["id"], "processing", prev=["a"], curr=names.PAUSE, next_=["b"]),
    )
    assert (await pipeline.get(task["id"]))["actor"] == "b"


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"input": {}}, "input.approved", "input.approved is required"),
        ({"input": {"approved": "yes"}}, "input.approved", "must be a boolean, not a string"),
        ({"input": {"approved": True, "reply": 3}}, "input.reply", "must be a string"),
        ({"input": {"aproved": True}}, "input.aproved", "does not ask for"),
        ({"input": [1]}, "input", "input must be an object"),
        ({"inputs": {}}, "", "unknown fields 'inputs'"),
    ],
)
async def test_input_that_does_not_fit_is_400_naming_the_field(
    pipeline: Pipeline, body: Any, field: str, says: str
) -> None:
    task = await pipeline.paused()

    response = await pipeline.resume(task["id"], body)

    assert response.status_code == 400
    message = error_of(response)["message"]
    assert says in message
    assert field in message
    assert (await pipeline.get(task["id"]))["status"] == "paused"


async def test_a_resume_of_an_unknown_or_unpaused_task_is_refused(pipeline: Pipeline) -> None:
    response = await pipeline.resume("nope", {"input": {}})
    assert response.status_code == 404
    task = await pipeline.submit()
    response = await pipeline.resume(task["id"], {"input": {}})
    assert response.status_code == 409
    assert "is pending, not paused" in error_of(response)["message"]


async def test_a_resume_at_the_end_of_the_route_goes_to_x_sink(pipeline: Pipeline) -> None:
    task = await pipeline.paused(["a", names.PAUSE], spec=None)

    response = await pipeline.resume(task["id"], {})  # no fields: no input needed

    assert response.status_code == 200, response.text
    done = await receive_envelope(pipeline.broker, names.SINK)
    assert done["route"] == {"prev": ["a", names.PAUSE], "curr": names.SINK, "next": []}
    assert (done["status"]["phase"], done["status"]["actor"]) == ("succeeded", names.PAUSE)


# ---------------------------------------------------------------------- expire, cancel


async def test_an_expired_pause_fails_the_task_and_x_sink_records_it(pipeline: Pipeline) -> None:
    task = await pipeline.paused(paused_for=7200.0, expires_in=-1.0)  # expired a second ago

    async def failed() -> dict[str, Any] | None:
        got = await pipeline.get(task["id"])
        return got if got["status"] == "failed" else None

    ended = await eventually(failed, "the sweep to fail the expired pause")
    assert ended["reason"] == "PauseExpired"
    assert ended["error"]["type"] == ended["error"]["mro"][0] == "PauseExpired"
    assert "waited longer than its limit" in ended["error"]["message"]
    record = await receive_envelope(pipeline.broker, names.SINK)
    assert record["id"] == task["id"]
    assert record["route"]["curr"] == names.SINK
    assert (record["status"]["phase"], record["status"]["reason"]) == ("failed", "PauseExpired")
    response = await pipeline.resume(task["id"], {"input": {"approved": True}})
    assert response.status_code == 409


async def test_a_canceled_pause_sends_its_envelope_to_x_sink(pipeline: Pipeline) -> None:
    task = await pipeline.paused()

    response = await pipeline.http.delete(f"{pipeline.server.url}/v1/tasks/{task['id']}")

    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert "pause" not in response.json()
    record = await receive_envelope(pipeline.broker, names.SINK)
    assert record["id"] == task["id"]
    assert (record["status"]["phase"], record["status"]["reason"]) == ("canceled", "Canceled")
    assert record["payload"] == {"draft": {"text": "hi"}}


# --------------------------------------------------------------------------- SSE, join


async def test_the_event_stream_shows_the_pause(pipeline: Pipeline) -> None:
    task, _ = await pipeline.at_x_pause()
    url = f"{pipeline.server.url}/v1/tasks/{task['id']}/events"
    async with pipeline.http.stream("GET", url) as response:
        events = read_events(response.aiter_lines())
        opening = await anext(events)
        assert "pause" not in opening.data
        assert (await pipeline.pause()).status_code == 200
        event = await anext(events)
        while event.kind != "status" or event.data["status"] != "paused":
            event = await anext(events)
    assert event.data["pause"]["prompt"] == "Send this reply?"
    assert event.data["pause"]["expires_at"] == pipeline.pause_body["expires_at"]


async def test_joining_reports_show_the_parts_arrived(pipeline: Pipeline) -> None:
    task = await pipeline.submit(["a", "b", names.JOIN, "c"])

    def joining(done: int) -> wire.HopReport:
        return report(
            task["id"], "joining", prev=["a", "b"], curr=names.JOIN, next_=["c"],
            progress={"done": done, "total": 5},
        )  # fmt: skip

    await post_reports(
        pipeline.http,
        pipeline.server,
        joining(2),
        joining(1),  # late
    )

    got = await pipeline.get(task["id"])
    assert (got["status"], got["actor"], got["join"]) == (
        "running", names.JOIN, {"done": 2, "total": 5}
    )  # fmt: skip
    assert got["progress"] == pytest.approx(2 / 5)  # joined parts / N
    bad = joining(6)
    response = await pipeline.http.post(
        f"{pipeline.server.internal_url}/internal/v1/reports", json={"reports": [bad]}
    )
    assert response.status_code == 400
    assert "reports[0].progress must be" in error_of(response)["message"]


# ---------------------------------------------------------------------------- RabbitMQ

RABBIT_ACTORS = ("gw-pause-a", "gw-pause-b")


@pytest.fixture
async def rabbit_pipeline(
    rabbitmq_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Pipeline, list[str]]]:
    environ = {"ASYA_RABBITMQ_URL": rabbitmq_url}
    async with RabbitMQTransport(rabbitmq_url) as admin:
        queues = [names.queue_name(NAMESPACE, actor) for actor in RABBIT_ACTORS]
        for queue in queues:
            await admin.delete_queue(queue)
            await admin.ensure_queue(queue)
        settings = GatewaySettings(
            port=0,
            internal_port=0,
            store_url=sqlite_url(tmp_path / "gateway.db"),
            transport="rabbitmq",
        )
        try:
            async with (
                GatewayServer(settings, environ) as server,
                httpx.AsyncClient(timeout=TIMEOUT_S) as http,
            ):
                yield (
                    Pipeline(server, http, admin),
                    [RABBIT_ACTORS[0], names.PAUSE, RABBIT_ACTORS[1]],
                )
        finally:
            for queue in queues:
                await admin.delete_queue(queue)


async def test_a_resume_publishes_the_continuation_to_rabbitmq(
    rabbit_pipeline: tuple[Pipeline, list[str]],
) -> None:
    pipeline, route = rabbit_pipeline
    task = await pipeline.paused(route)

    response = await pipeline.resume(task["id"], {"input": {"approved": False}})

    assert response.status_code == 200, response.text
    continuation = await receive_envelope(pipeline.broker, route[2])
    assert continuation["route"] == {"prev": route[:2], "curr": route[2], "next": []}
    assert continuation["payload"]["approved"] is False
