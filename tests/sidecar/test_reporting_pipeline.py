"""Status reports through real pipelines (runtime + sidecar per actor, plus the crew) on the
embedded transport, reporting to a real HTTP receiver that answers as the gateway's internal
port does (tests/support/report_receiver.py)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pipeline import StartPipeline, actor
from tests.support.report_receiver import ReportReceiver
from tests.support.waiting import eventually

pytestmark = [
    pytest.mark.slow,
    # What is reported does not depend on the broker; the transports have their own suites.
    pytest.mark.parametrize("transport_kind", ["local"], indirect=True),
]

AB = [actor("a", "flow.mark_a"), actor("b", "flow.mark_b")]
RETRY = {
    "policies": {"default": {"maxAttempts": 3, "backoff": "constant", "initialDelay": "100ms"}}
}


@pytest.fixture
def receiver() -> Iterator[ReportReceiver]:
    with ReportReceiver() as running:
        yield running


def reporting_to(url: str) -> dict[str, str]:
    # A short interval keeps the tests quick; the default is 1 s.
    return {"ASYA_GATEWAY_URL": url, "ASYA_GATEWAY_REPORT_INTERVAL": "100ms"}


async def reports_until(
    receiver: ReportReceiver, envelope_id: str, wanted: set[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Every report about `envelope_id`, once those (actor, event) pairs have all arrived."""

    def arrived() -> list[dict[str, Any]]:
        have = set(receiver.events(envelope_id))
        return receiver.about(envelope_id) if wanted <= have else []

    return await eventually(
        arrived,
        what=f"reports {sorted(wanted)} about {envelope_id}",
        details=lambda: f"received: {receiver.events(envelope_id)}",
    )


def one(reports: list[dict[str, Any]], actor_name: str, event: str) -> dict[str, Any]:
    [found] = [r for r in reports if r["actor"] == actor_name and r["event"] == event]
    return found


async def test_each_hop_reports_its_steps_and_x_sink_reports_the_result(
    start_pipeline: StartPipeline, receiver: ReportReceiver
) -> None:
    pipeline = await start_pipeline(AB, extra_env=reporting_to(receiver.url))

    envelope_id = await pipeline.send(["a", "b"], {"trail": []})
    await pipeline.result(envelope_id)
    hops = {(a, e) for a in ("a", "b") for e in ("received", "processing", "routed")}
    reports = await reports_until(receiver, envelope_id, hops | {("x-sink", "succeeded")})

    assert sorted(receiver.events(envelope_id)) == sorted(hops | {("x-sink", "succeeded")})
    assert one(reports, "a", "received")["route"] == {"prev": [], "curr": "a", "next": ["b"]}
    assert one(reports, "a", "routed")["route"] == {"prev": ["a"], "curr": "b", "next": []}
    assert one(reports, "b", "received")["route"] == {"prev": ["a"], "curr": "b", "next": []}
    assert one(reports, "b", "routed")["route"] == {
        "prev": ["a", "b"], "curr": "x-sink", "next": [],
    }  # fmt: skip
    assert {r["attempt"] for r in reports} == {1}
    terminal = one(reports, "x-sink", "succeeded")
    assert terminal["result"] == {"trail": ["a", "b"]}
    assert terminal["reason"] is None
    assert terminal["error"] is None
    assert terminal["parent_id"] is None
    # The crew's sidecars report nothing of their own; only the crew handlers' endings.
    crew_steps = [r for r in receiver.reports if r["actor"] in ("x-sink", "x-sump")]
    assert [r["event"] for r in crew_steps] == ["succeeded"]


async def test_retries_are_reported_and_the_failure_ends_it_from_x_sink(
    start_pipeline: StartPipeline, receiver: ReportReceiver, tmp_path: Path
) -> None:
    pipeline = await start_pipeline(
        [actor("doomed", "flow.always_fails", resiliency=RETRY)],
        extra_env=reporting_to(receiver.url),
    )

    envelope_id = await pipeline.send(["doomed"], {"calls": str(tmp_path / "calls")})

    def both_retries_and_the_end() -> list[dict[str, Any]]:
        events = receiver.events(envelope_id)
        done = events.count(("doomed", "retrying")) == 2 and ("x-sink", "failed") in events
        return receiver.about(envelope_id) if done else []

    reports = await eventually(
        both_retries_and_the_end,
        what="two retrying reports and the failure",
        details=lambda: f"received: {receiver.events(envelope_id)}",
    )

    retrying = [r for r in reports if r["event"] == "retrying"]
    assert sorted(r["attempt"] for r in retrying) == [1, 2]
    assert {r["reason"] for r in retrying} == {"HandlerError"}
    assert {r["error"]["type"] for r in retrying} == {"flow.BadInput"}
    terminal = one(reports, "x-sink", "failed")
    assert terminal["reason"] == "PolicyExhausted"
    assert terminal["error"]["type"] == "flow.BadInput"
    assert terminal["attempt"] == 3
    assert "result" not in terminal


async def test_side_events_are_reported_as_the_handler_yielded_them(
    start_pipeline: StartPipeline, receiver: ReportReceiver
) -> None:
    pipeline = await start_pipeline(
        [actor("progress", "flow.progress")], extra_env=reporting_to(receiver.url)
    )

    envelope_id = await pipeline.send(["progress"], {"text": "hi"})
    await reports_until(receiver, envelope_id, {("progress", "fly"), ("x-sink", "succeeded")})

    def fly_reports() -> list[dict[str, Any]]:
        found = [
            r
            for r in receiver.about(envelope_id)
            if (r["actor"], r["event"]) == ("progress", "fly")
        ]
        return found if sum(len(r["events"]) for r in found) >= 3 else []

    # Live: events yielded back to back usually share a report, but may come in several.
    flies = await eventually(fly_reports, "all three side events reported")
    assert [event for r in flies for event in r["events"]] == [
        {"progress": 1 / 3},
        {"progress": 2 / 3},
        {"progress": 1.0},
    ]
    assert all(r["route"] == {"prev": [], "curr": "progress", "next": []} for r in flies)


async def test_what_never_reaches_x_sink_is_reported_failed_by_x_sump(
    start_pipeline: StartPipeline, receiver: ReportReceiver
) -> None:
    pipeline = await start_pipeline(AB, extra_env=reporting_to(receiver.url))

    lost_id = await pipeline.send(["a", "ghost"], {"trail": []})
    broken = {"id": "broken-1", "route": {"prev": [], "curr": "a", "next": []}}  # no payload
    await pipeline.send_raw("a", json.dumps(broken).encode())
    lost = await reports_until(receiver, lost_id, {("x-sump", "failed")})
    unparsable = await reports_until(receiver, "broken-1", {("x-sump", "failed")})

    assert one(lost, "x-sump", "failed")["reason"] == "UnknownActor"
    assert one(unparsable, "x-sump", "failed")["reason"] == "ParseError"
    assert one(unparsable, "x-sump", "failed")["error"]["type"] == "ParseError"
    assert ("x-sink", "failed") not in receiver.events(lost_id)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_a_gateway_that_is_down_changes_nothing_for_the_envelopes(
    start_pipeline: StartPipeline,
) -> None:
    url = closed_port_url()
    pipeline = await start_pipeline(AB, extra_env=reporting_to(url))

    ids = [await pipeline.send(["a", "b"], {"trail": [], "n": i}) for i in range(5)]
    results = await pipeline.results(ids)

    assert all(r["status"]["phase"] == "succeeded" for r in results.values())
    assert all(r["payload"]["trail"] == ["a", "b"] for r in results.values())
    assert pipeline.sump_records() == []
    log = pipeline.log_path.read_text()
    # x-sink says so at once (a result's report is worth a line); the sidecars only after a
    # grace of 10 s (tests/sidecar/test_reporting.py), which this short run does not reach.
    assert f"cannot post terminal reports to the gateway at {url}" in log
    assert "Traceback" not in log


async def test_a_task_canceled_meanwhile_is_finished_at_its_next_hop_without_its_handler(
    start_pipeline: StartPipeline, receiver: ReportReceiver, tmp_path: Path
) -> None:
    pipeline = await start_pipeline(
        [actor("gate", "gated.gate"), actor("b", "flow.must_not_run")],
        extra_env=reporting_to(receiver.url),
    )
    started, release, ran = tmp_path / "started", tmp_path / "release", tmp_path / "ran"
    payload = {"started": str(started), "release": str(release), "ran": str(ran), "trail": []}

    envelope_id = await pipeline.send(["gate", "b"], payload, headers={"x-tenant": "acme"})
    await eventually(started.exists, what="the gate handler to start")
    receiver.cancel(envelope_id)
    # b's sidecar has heard of it (its cursor moved past it) before the gate lets go.
    await eventually(
        lambda: any(envelope_id in batch.canceled for batch in receiver.posts_from("b")),
        what="b's sidecar to learn of the cancellation",
    )
    release.touch()
    result = await pipeline.result(envelope_id)

    assert not ran.exists(), "b's handler was called for a canceled task"
    assert result["status"]["phase"] == "canceled"
    assert result["status"]["reason"] == "Canceled"
    assert result["status"]["error"] is None
    assert result["status"]["actor"] == "b"
    assert result["route"] == {"prev": ["gate", "b"], "curr": "x-sink", "next": []}
    assert result["payload"]["trail"] == ["gate"]
    assert result["headers"]["x-tenant"] == "acme"
    reports = await reports_until(receiver, envelope_id, {("x-sink", "canceled")})
    terminal = one(reports, "x-sink", "canceled")
    assert terminal["reason"] == "Canceled"
    assert terminal["error"] is None
    assert not any(r["actor"] == "b" for r in reports), "b reported a hop it did not take"
    # x-sink did not hand it on: a failure sent after it reaches x-sump alone (x-sink and
    # x-sump each take their queue in order, so it would have come first).
    failing_id = await pipeline.send(["gate"], {"no": "paths"})
    [sumped] = await pipeline.wait_sump(1)
    assert sumped["id"] == failing_id
