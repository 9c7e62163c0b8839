"""reporting.py: the reports a sidecar makes, the bounded queue, the cancel set, and the
Reporter posting to a real HTTP receiver on loopback (tests/support/report_receiver.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import inspect
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from asya_gateway import tasks
from asya_shared import wire
from asya_sidecar import config, envelope, reporting, resiliency, routing
from asya_sidecar.consumer import Consumer
from asya_sidecar.envelope import Envelope, Reason
from asya_sidecar.events import EventForwarder
from asya_sidecar.metrics import SidecarMetrics
from asya_sidecar.reporting import (
    PATH,
    CancelSet,
    Hop,
    Reporter,
    ReportQueue,
    from_config,
    outcome_reports,
)
from asya_sidecar.routing import Context, Outcome
from asya_sidecar.runtime_client import Frames, HandlerError, Parked, RuntimeClient
from asya_sidecar.tracing import TraceContext
from asya_transports import create
from tests.support.report_receiver import ReportReceiver
from tests.support.waiting import eventually

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
AT = envelope.timestamp(NOW)
TRACE = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def ctx(actor: str = "infer", policies: resiliency.Resiliency | None = None) -> Context:
    return Context(
        actor=actor,
        now=NOW,
        trace=TRACE,
        new_id="fresh-id",
        max_message_bytes=1_000_000,
        crew_retry_delay=10.0,
        resiliency=policies or resiliency.Resiliency(),
    )


def incoming(actor: str = "infer", **overrides: Any) -> tuple[Envelope, bytes]:
    fields: dict[str, Any] = {
        "id": "e1",
        "route": {"prev": ["prep"], "curr": actor, "next": ["post"]},
        "headers": {},
        "payload": {"n": 1},
    }
    fields.update(overrides)
    body = json.dumps(fields).encode()
    parsed = envelope.parse(body, actor=actor)
    assert isinstance(parsed, Envelope)
    return parsed, body


def frame(payload: Any, next_: list[str]) -> wire.Frame:
    return {"payload": payload, "route": {"prev": ["prep"], "curr": "infer", "next": next_}}


def report(envelope_id: str = "e1", event: str = "received") -> wire.HopReport:
    return {
        "id": envelope_id,
        "parent_id": None,
        "actor": "infer",
        "event": event,
        "route": {"prev": [], "curr": "infer", "next": []},
        "attempt": 1,
        "at": AT,
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------- the queue


def test_the_queue_drops_the_oldest_beyond_its_limit_and_says_how_many() -> None:
    queue = ReportQueue(limit=3)

    dropped = [queue.append(report(f"e{i}")) for i in range(5)]

    assert dropped == [0, 0, 0, 1, 1]
    assert [r["id"] for r in queue.take(10)] == ["e2", "e3", "e4"]
    assert len(queue) == 0


def test_take_hands_out_the_oldest_first_and_leaves_the_rest() -> None:
    queue = ReportQueue(limit=10)
    for i in range(5):
        queue.append(report(f"e{i}"))

    assert [r["id"] for r in queue.take(2)] == ["e0", "e1"]
    assert [r["id"] for r in queue.take(2)] == ["e2", "e3"]
    assert len(queue) == 1


def test_a_failed_batch_goes_back_in_front_of_what_came_meanwhile() -> None:
    queue = ReportQueue(limit=10)
    for i in range(3):
        queue.append(report(f"e{i}"))
    batch = queue.take(3)
    queue.append(report("later"))

    assert queue.put_back(batch) == 0
    assert [r["id"] for r in queue.take(10)] == ["e0", "e1", "e2", "later"]


def test_a_failed_batch_keeps_only_its_newest_reports_when_room_is_short() -> None:
    queue = ReportQueue(limit=4)
    for i in range(4):
        queue.append(report(f"old{i}"))
    batch = queue.take(4)
    for i in range(2):
        queue.append(report(f"new{i}"))

    assert queue.put_back(batch) == 2
    assert [r["id"] for r in queue.take(10)] == ["old2", "old3", "new0", "new1"]


# ---------------------------------------------------------------------- the cancel set


def test_canceled_ids_are_forgotten_after_their_time() -> None:
    clock = FakeClock()
    canceled = CancelSet(ttl=60, clock=clock)
    canceled.add(["a"])
    clock.now += 30
    canceled.add(["b"])

    clock.now += 31
    canceled.prune()

    assert "a" not in canceled
    assert "b" in canceled


def test_an_id_learned_again_is_kept_from_then_on() -> None:
    clock = FakeClock()
    canceled = CancelSet(ttl=60, clock=clock)
    canceled.add(["a", "b"])
    clock.now += 50
    canceled.add(["a"])

    clock.now += 20
    canceled.prune()

    assert list(canceled) == ["a"]


def test_the_cancel_set_keeps_the_newest_ids_within_its_limit() -> None:
    canceled = CancelSet(limit=3, clock=FakeClock())

    canceled.add(["a", "b", "c", "d", "e"])

    assert list(canceled) == ["c", "d", "e"]


# ---------------------------------------------------------------- canceled envelopes


@pytest.mark.parametrize(
    ("overrides", "ids", "expected"),
    [
        ({}, {"e1"}, True),
        ({"id": "e1-2", "parent_id": "e1"}, {"e1"}, True),  # a fan-out child of the task
        ({}, {"other"}, False),
        ({"parent_id": None}, set(), False),
    ],
)
def test_an_envelope_is_canceled_by_its_own_id_or_its_parents(
    overrides: dict[str, Any], ids: set[str], expected: bool
) -> None:
    env, _ = incoming(**overrides)

    assert routing.is_canceled(env, ids) is expected


def test_a_canceled_envelope_is_finished_for_x_sink_without_an_error() -> None:
    env, _ = incoming(headers={"x-tenant": "acme"})

    decision = routing.canceled(env, ctx())

    assert decision.outcome is Outcome.CANCELED
    assert decision.reason is Reason.CANCELED
    [output] = decision.outputs
    assert output.actor == "x-sink"
    out = json.loads(output.body)
    assert out["route"] == {"prev": ["prep", "infer"], "curr": "x-sink", "next": ["post"]}
    assert out["status"]["phase"] == "canceled"
    assert out["status"]["reason"] == "Canceled"
    assert out["status"]["error"] is None
    assert out["payload"] == {"n": 1}
    assert out["headers"]["x-tenant"] == "acme"


# ---------------------------------------------------------------- what is reported


def test_routed_is_reported_per_output_with_the_route_as_sent() -> None:
    env, body = incoming()
    result = Frames([frame({"part": 0}, ["post"]), frame({"part": 1}, [])])

    decision = routing.decide(env, result, body=body, ctx=ctx())
    reports = outcome_reports(Hop(env, "infer"), decision, at=AT)

    assert [(r["id"], r["parent_id"], r["event"], r["route"]) for r in reports] == [
        ("e1", None, "routed", {"prev": ["prep", "infer"], "curr": "post", "next": []}),
        ("e1-1", "e1", "routed", {"prev": ["prep", "infer"], "curr": "x-sink", "next": []}),
    ]
    assert all(r["actor"] == "infer" and r["at"] == AT for r in reports)
    assert all("reason" not in r for r in reports)


def test_a_retry_is_reported_on_the_attempt_that_failed_with_its_reason_and_error() -> None:
    policies = resiliency.parse({"policies": {"default": {"maxAttempts": 3}}})
    env, body = incoming(
        status={"phase": "retrying", "actor": "infer", "attempt": 2, "max_attempts": 3}
    )
    details = wire.error_details("ValueError", "bad", mro=["ValueError", "Exception"])

    decision = routing.decide(env, HandlerError(details), body=body, ctx=ctx(policies=policies))
    [retrying] = outcome_reports(Hop(env, "infer"), decision, at=AT)

    assert decision.outcome is Outcome.RETRIED
    assert retrying["event"] == "retrying"
    assert retrying["attempt"] == 2
    assert retrying["reason"] == "HandlerError"
    assert retrying["error"] is not None
    assert retrying["error"]["message"] == "bad"
    assert retrying["route"] == {"prev": ["prep"], "curr": "infer", "next": ["post"]}


def test_a_policy_detour_is_reported_as_routed_with_its_reason() -> None:
    policies = resiliency.parse(
        {"policies": {"default": {"maxAttempts": 1, "thenRoute": ["fallback"]}}}
    )
    env, body = incoming()
    details = wire.error_details("ValueError", "bad", mro=["ValueError", "Exception"])

    decision = routing.decide(env, HandlerError(details), body=body, ctx=ctx(policies=policies))
    [routed] = outcome_reports(Hop(env, "infer"), decision, at=AT)

    assert routed["event"] == "routed"
    assert routed["route"] == {"prev": ["prep", "infer"], "curr": "fallback", "next": []}
    assert routed["reason"] == "PolicyRouted"


@pytest.mark.parametrize("outcome", ["failed", "canceled", "sumped"])
def test_endings_are_left_to_the_crew_to_report(outcome: str) -> None:
    env, body = incoming()
    details = wire.error_details("ValueError", "bad")
    decisions = {
        "failed": routing.decide(env, HandlerError(details), body=body, ctx=ctx()),
        "canceled": routing.canceled(env, ctx()),
        "sumped": routing.decide(
            env, Frames([{"payload": 1, "route": {"curr": "elsewhere"}}]), body=body, ctx=ctx()
        ),
    }

    assert decisions[outcome].outcome == outcome
    assert outcome_reports(Hop(env, "infer"), decisions[outcome], at=AT) == []


def test_the_reports_of_a_two_hop_route_move_a_gateway_task_forward_in_order() -> None:
    """The sidecar's reports, as it makes them, against the gateway's `advance`: every one
    moves the task (the next actor's reports come after the previous actor's `routed`,
    whose route is the route as sent), and a late one changes nothing."""
    first, first_body = incoming(
        "a", route={"prev": [], "curr": "a", "next": ["b"]}, payload={"x": 1}
    )
    hop_a = Hop(first, "a")
    decision_a = routing.decide(first, Frames([{"payload": 1}]), body=first_body, ctx=ctx("a"))
    sent = json.loads(decision_a.outputs[0].body)
    second, second_body = incoming("b", route=sent["route"], status=sent["status"])
    hop_b = Hop(second, "b")
    policies = resiliency.parse({"policies": {"default": {"maxAttempts": 2}}})
    details = wire.error_details("ValueError", "flaky", mro=["ValueError", "Exception"])
    decision_b = routing.decide(
        second, HandlerError(details), body=second_body, ctx=ctx("b", policies)
    )
    sequence = [
        hop_a.report("received", AT),
        hop_a.report("processing", AT),
        *outcome_reports(hop_a, decision_a, at=AT),
        hop_b.report("received", AT),
        hop_b.report("processing", AT),
        *outcome_reports(hop_b, decision_b, at=AT),
    ]
    task = tasks.Task(
        id="e1",
        tenant="",
        status=tasks.TaskStatus.PENDING,
        route={"prev": [], "curr": "a", "next": ["b"]},
        actor="a",
        progress=0.0,
        created_at=AT,
        updated_at=AT,
    )

    seen = []
    for hop_report in sequence:
        moved = tasks.advance(task, hop_report)
        assert moved is not None, f"{hop_report['event']} at {hop_report['actor']} was ignored"
        task = moved
        seen.append((task.actor, task.progress))

    assert seen == [("a", 0.0), ("a", 0.0), ("b", 0.5), ("b", 0.5), ("b", 0.5), ("b", 0.5)]
    assert task.reason == "HandlerError"
    assert tasks.advance(task, hop_a.report("processing", AT)) is None


# -------------------------------------------------------------- with and without it


def sidecar_config(**environ: str) -> config.SidecarConfig:
    return config.load({"ASYA_ACTOR": "infer", **environ})


def test_without_a_gateway_url_there_is_no_reporter() -> None:
    metrics = SidecarMetrics("infer")

    assert sidecar_config().gateway_url is None
    assert from_config(sidecar_config(), metrics) is None


def test_crew_sidecars_have_no_reporter_even_with_a_gateway_url() -> None:
    crew = config.load({"ASYA_ACTOR": "x-sink", "ASYA_GATEWAY_URL": "http://gw:8081"})

    assert from_config(crew, SidecarMetrics("x-sink")) is None


def test_with_a_gateway_url_the_reporter_posts_there_at_the_configured_interval() -> None:
    settings = sidecar_config(
        ASYA_GATEWAY_URL="http://gw:8081/", ASYA_GATEWAY_REPORT_INTERVAL="250ms"
    )

    reporter = from_config(settings, SidecarMetrics("infer"))

    assert reporter is not None
    assert reporter.url == "http://gw:8081/internal/v1/reports"
    assert reporter.interval == 0.25


def test_a_gateway_url_that_is_not_http_is_refused_by_name() -> None:
    with pytest.raises(config.ConfigError, match="ASYA_GATEWAY_URL='gw:8081'"):
        sidecar_config(ASYA_GATEWAY_URL="gw:8081")


def test_a_consumer_built_without_a_reporter_has_none(tmp_path: Any) -> None:
    settings = sidecar_config()
    metrics = SidecarMetrics("infer")
    consumer = Consumer(
        config=settings,
        transport=create("local", {"ASYA_STATE_DIR": str(tmp_path)}),
        runtime=RuntimeClient(str(tmp_path / "none.sock")),
        metrics=metrics,
        events=EventForwarder(url=None, actor="infer", metrics=metrics),
    )

    assert consumer.reporter is None


def test_reporting_is_a_plain_append_on_the_hot_path() -> None:
    assert not inspect.iscoroutinefunction(Reporter.report)
    assert not inspect.iscoroutinefunction(Reporter.report_all)


# ------------------------------------------------------------- posting, for real


def counter(metrics: SidecarMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"actor": "infer", **labels})
    return value or 0.0


@pytest.fixture
def report_receiver() -> Iterator[ReportReceiver]:
    with ReportReceiver() as receiver:
        yield receiver


@pytest.fixture
def metrics() -> SidecarMetrics:
    return SidecarMetrics("infer")


@dataclasses.dataclass
class Running:
    reporter: Reporter
    task: asyncio.Task[None]


@pytest.fixture
async def running(
    report_receiver: ReportReceiver, metrics: SidecarMetrics, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    options = getattr(request, "param", {})
    reporter = Reporter(url=report_receiver.url, actor="infer", metrics=metrics, **options)
    task = asyncio.create_task(reporter.run())
    yield Running(reporter, task)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await reporter.close()


@pytest.mark.parametrize("running", [{"interval": 0.05}], indirect=True)
async def test_reports_arrive_in_order_in_the_documented_shape(
    running: Running, report_receiver: ReportReceiver, metrics: SidecarMetrics
) -> None:
    for i in range(3):
        running.reporter.report(report(f"e{i}"))

    await eventually(lambda: len(report_receiver.reports) == 3, what="3 reports")

    [batch] = [b for b in report_receiver.batches if b.reports]
    assert batch.actor == "infer"
    assert batch.cursor == 0
    assert [r["id"] for r in batch.reports] == ["e0", "e1", "e2"]
    assert batch.reports[0] == report("e0")
    assert counter(metrics, "asya_sidecar_report_batches_total", result="sent") >= 1


@pytest.mark.parametrize("running", [{"interval": 0.05}], indirect=True)
async def test_an_idle_reporter_still_asks_and_learns_cancellations_with_its_cursor(
    running: Running, report_receiver: ReportReceiver
) -> None:
    await eventually(lambda: report_receiver.batches, what="a first (empty) batch")
    report_receiver.cancel("t1")
    report_receiver.cancel("t2")

    await eventually(lambda: "t2" in running.reporter.canceled, what="t2 to be canceled")
    report_receiver.cancel("t3")
    await eventually(lambda: "t3" in running.reporter.canceled, what="t3 to be canceled")

    assert set(running.reporter.canceled) == {"t1", "t2", "t3"}
    # Each cancellation is handed over once: the cursor moves past it.
    handed = [i for b in report_receiver.batches for i in b.canceled]
    assert handed == ["t1", "t2", "t3"]
    assert running.reporter.cursor == 3
    await eventually(
        lambda: report_receiver.batches[-1].cursor == 3, what="the cursor sent back, past t3"
    )
    assert all(b.reports == [] for b in report_receiver.batches)


@pytest.mark.parametrize("running", [{"interval": 3600, "batch_size": 4}], indirect=True)
async def test_a_full_batch_is_posted_without_waiting_for_the_interval(
    running: Running, report_receiver: ReportReceiver
) -> None:
    await eventually(lambda: report_receiver.batches, what="the first post at start")
    for i in range(4):
        running.reporter.report(report(f"e{i}"))

    await eventually(lambda: len(report_receiver.reports) == 4, what="the full batch")


@pytest.mark.parametrize("running", [{"interval": 3600}], indirect=True)
async def test_an_urgent_report_is_posted_without_waiting_for_the_interval(
    running: Running, report_receiver: ReportReceiver
) -> None:
    await eventually(lambda: report_receiver.batches, what="the first post at start")
    running.reporter.report(report("e0"))
    running.reporter.report(report("e1"), urgent=True)  # a side event: takes e0 along

    await eventually(lambda: len(report_receiver.reports) == 2, what="the urgent post")
    assert [r["id"] for r in report_receiver.reports] == ["e0", "e1"]


@pytest.mark.parametrize("running", [{"interval": 3600}], indirect=True)
async def test_settled_waits_until_what_was_queued_is_posted(
    running: Running, report_receiver: ReportReceiver
) -> None:
    await eventually(lambda: report_receiver.batches, what="the first post at start")
    report_receiver.hold()
    for i in range(3):
        running.reporter.report(report(f"e{i}"))
    waiting = asyncio.create_task(running.reporter.settled(30))
    await eventually(lambda: len(report_receiver.batches) >= 2, what="the post to be made")
    assert not waiting.done()  # posted, not yet answered

    report_receiver.release()

    assert await asyncio.wait_for(waiting, 30) is True
    assert [r["id"] for r in report_receiver.reports] == ["e0", "e1", "e2"]


@pytest.mark.parametrize("running", [{"interval": 0.5}], indirect=True)
async def test_settled_gives_up_after_its_timeout_when_the_gateway_fails(
    running: Running, report_receiver: ReportReceiver
) -> None:
    await eventually(lambda: report_receiver.batches, what="the first post at start")
    report_receiver.fail_next(3, status=503)
    for i in range(5):  # urgent, but the gateway failed: asked again only every interval
        running.reporter.report(report(f"e{i}"), urgent=True)

    assert await running.reporter.settled(0.2) is False
    failed_meanwhile = [b for b in report_receiver.batches if b.status == 503]
    await eventually(lambda: len(report_receiver.reports) == 5, what="the reports, later")
    assert len(failed_meanwhile) == 1
    assert [r["id"] for r in report_receiver.reports] == [f"e{i}" for i in range(5)]


@pytest.mark.parametrize("running", [{"interval": 0.05}], indirect=True)
async def test_a_batch_the_gateway_could_not_take_is_posted_again_in_order(
    running: Running, report_receiver: ReportReceiver, metrics: SidecarMetrics
) -> None:
    await eventually(lambda: report_receiver.batches, what="the first post")
    report_receiver.fail_next(2, status=503)
    for i in range(3):
        running.reporter.report(report(f"e{i}"))

    await eventually(lambda: len(report_receiver.reports) == 3, what="the retried reports")

    assert [r["id"] for r in report_receiver.reports] == ["e0", "e1", "e2"]
    failed = [b for b in report_receiver.batches if b.status == 503]
    assert len(failed) == 2
    assert counter(metrics, "asya_sidecar_report_batches_total", result="failed") == 2
    assert counter(metrics, "asya_sidecar_reports_dropped_total") == 0


@pytest.mark.parametrize("running", [{"interval": 0.05}], indirect=True)
async def test_a_batch_the_gateway_refuses_is_dropped_not_retried(
    running: Running, report_receiver: ReportReceiver, metrics: SidecarMetrics
) -> None:
    await eventually(lambda: report_receiver.batches, what="the first post")
    report_receiver.fail_next(1, status=400)
    running.reporter.report(report("refused"))
    await eventually(
        lambda: any(b.status == 400 for b in report_receiver.batches), what="the refusal"
    )
    running.reporter.report(report("next"))

    await eventually(lambda: report_receiver.about("next"), what="the next report")

    assert report_receiver.about("refused") == []
    assert counter(metrics, "asya_sidecar_reports_dropped_total") == 1


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_a_gateway_that_is_down_costs_only_bounded_memory_and_one_warning(
    metrics: SidecarMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = Reporter(
        url=closed_port_url(),
        actor="infer",
        metrics=metrics,
        max_pending=5,
        batch_size=2,
        failure_grace=0,
    )
    caplog.set_level(logging.WARNING, logger="asya.sidecar.reporting")

    for attempt in range(3):
        for i in range(4):
            reporter.report(report(f"e{attempt}-{i}"))
        assert await reporter.flush() is False

    assert len(reporter.queue) == 5
    assert [r["id"] for r in reporter.queue.take(5)] == [
        "e1-3", "e2-0", "e2-1", "e2-2", "e2-3",
    ]  # fmt: skip
    assert counter(metrics, "asya_sidecar_reports_dropped_total") == 7
    assert counter(metrics, "asya_sidecar_report_batches_total", result="failed") == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot post status reports to the gateway at http://127.0.0.1:" in warnings[0].message
    assert "ASYA_GATEWAY_URL" in warnings[0].message
    await reporter.close()


async def test_a_gateway_that_comes_up_within_the_grace_is_not_warned_about(
    report_receiver: ReportReceiver, metrics: SidecarMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    down = Reporter(url=closed_port_url(), actor="infer", metrics=metrics, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="asya.sidecar.reporting")

    for second in (0.0, 4.0, 9.0):
        now[0] = second
        assert await down.flush() is False
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    now[0] = 10.0
    assert await down.flush() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1

    # Up again: the outage that was warned about is closed with one line; a short blip
    # after it leaves no line at all.
    down.url = report_receiver.url.rstrip("/") + PATH
    now[0] = 12.0
    assert await down.flush() is True
    assert [r.message for r in caplog.records if "again after" in r.message] == [
        "reporting to the gateway again after 12s"
    ]
    await down.close()


async def test_closing_posts_what_is_still_queued(
    report_receiver: ReportReceiver, metrics: SidecarMetrics
) -> None:
    reporter = Reporter(url=report_receiver.url, actor="infer", metrics=metrics, interval=3600)
    reporter.report(report("last"))

    await reporter.close()

    assert [r["id"] for r in report_receiver.reports] == ["last"]


def test_a_report_utf8_cannot_hold_is_still_sent() -> None:
    batch = {"reports": [{"events": ["half a pair: \ud800"]}], "canceled_cursor": 0}

    assert json.loads(reporting.encode(batch)) == batch


def test_a_parked_envelope_is_reported_paused_with_its_route_as_it_stands() -> None:
    env, body = incoming()
    decision = routing.decide(env, Parked(None), body=body, ctx=ctx())

    [paused] = outcome_reports(Hop(env, "infer"), decision, at=AT)

    assert paused["event"] == "paused"
    assert paused["id"] == "e1"
    assert paused["route"] == {"prev": ["prep"], "curr": "infer", "next": ["post"]}
