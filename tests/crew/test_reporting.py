"""reporting.py: the terminal reports x-sink and x-sump send to the gateway, posted to a real
HTTP receiver on loopback (tests/support/report_receiver.py), and never in the handler's way.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from asya_crew import config, reporting, sink, sump
from asya_crew.reporting import CrewReporter
from tests.crew.conftest import crew_envelope, drive
from tests.crew.test_sink import stored
from tests.support.report_receiver import ReportReceiver
from tests.support.waiting import eventually

AT = "2026-11-24T12:00:00.000Z"


@pytest.fixture
def receiver() -> Iterator[ReportReceiver]:
    with ReportReceiver() as running:
        yield running


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def dropped(role: str) -> float:
    return REGISTRY.get_sample_value("asya_crew_reports_dropped_total", {"role": role}) or 0.0


# ------------------------------------------------------------------------ pure parts


def test_a_success_is_reported_with_its_result() -> None:
    envelope = crew_envelope({"answer": 42}, parent_id="p-1")

    report = reporting.terminal_report(envelope, actor="x-sink", at=AT)

    assert report == {
        "id": envelope["id"],
        "parent_id": "p-1",
        "actor": "x-sink",
        "event": "succeeded",
        "route": {"prev": ["prep", "infer"], "curr": "x-sink", "next": []},
        "attempt": 1,
        "at": AT,
        "reason": None,
        "error": None,
        "result": {"answer": 42},
    }


def test_a_failure_is_reported_with_its_reason_and_error_and_no_result() -> None:
    envelope = crew_envelope(phase="failed")
    error = {"type": "ValueError", "mro": ["ValueError"], "message": "bad", "traceback": None}
    envelope["status"].update(reason="PolicyExhausted", attempt=3, error=error)

    report = reporting.terminal_report(envelope, actor="x-sink", at=AT)

    assert report is not None
    assert (report["event"], report["reason"], report["attempt"]) == (
        "failed",
        "PolicyExhausted",
        3,
    )
    assert report["error"] == error
    assert "result" not in report


def test_x_sump_reports_failed_whatever_the_phase_it_was_given() -> None:
    envelope = crew_envelope(phase="pending", route="not a route")

    report = reporting.terminal_report(envelope, actor="x-sump", at=AT, event="failed")

    assert report is not None
    assert report["event"] == "failed"
    assert report["route"] == {"prev": [], "curr": "x-sump", "next": []}


@pytest.mark.parametrize(
    "fields",
    [{"id": None}, {"id": ""}, {"id": 7}, {"status": {"phase": "processing"}}, {"status": None}],
    ids=["no-id", "empty-id", "number-id", "not-an-end", "no-status"],
)
def test_nothing_is_reported_that_a_gateway_could_not_use(fields: dict[str, Any]) -> None:
    envelope = crew_envelope()
    envelope.update(fields)

    assert reporting.terminal_report(envelope, actor="x-sink", at=AT) is None


@pytest.mark.parametrize(
    ("prev", "expected"), [(["a", "x-sink"], True), (["a"], False), ("x-sink", False)]
)
def test_what_x_sink_passed_on_is_known_by_its_route(prev: Any, expected: bool) -> None:
    record = {"route": {"prev": prev, "curr": "x-sump", "next": []}}

    assert reporting.reached_sink(record) is expected


def test_without_a_gateway_url_there_is_no_reporter(tmp_path: Path) -> None:
    assert reporting.from_environ({}, role="x-sink") is None
    handler = sink.Sink({config.RESULT_STORE: f"file://{tmp_path}"})
    assert handler.reporter is None


def test_a_gateway_url_that_is_not_http_reports_nothing_and_stores_regardless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert reporting.from_environ({"ASYA_GATEWAY_URL": "gw:8081"}, role="x-sink") is None
    assert "ASYA_GATEWAY_URL='gw:8081' is not an http:// or https:// URL" in caplog.text


# -------------------------------------------------------------------- the handlers


@pytest.fixture
async def sink_handler(tmp_path: Path, receiver: ReportReceiver) -> AsyncIterator[sink.Sink]:
    handler = sink.Sink(
        {config.RESULT_STORE: f"file://{tmp_path / 'results'}", "ASYA_GATEWAY_URL": receiver.url}
    )
    yield handler
    assert handler.reporter is not None
    await handler.reporter.close()


@pytest.fixture
async def sump_handler(tmp_path: Path, receiver: ReportReceiver) -> AsyncIterator[sump.Sump]:
    handler = sump.Sump(
        {config.SUMP_STORE: f"file://{tmp_path / 'sump'}", "ASYA_GATEWAY_URL": receiver.url}
    )
    yield handler
    assert handler.reporter is not None
    await handler.reporter.close()


async def test_x_sink_reports_a_result_once_it_is_stored(
    sink_handler: sink.Sink, receiver: ReportReceiver, tmp_path: Path
) -> None:
    envelope = crew_envelope({"answer": "é"})

    frames = await drive(sink_handler.handle(envelope["payload"]), envelope)
    [report] = await eventually(lambda: receiver.about(envelope["id"]), what="the report")

    assert frames == []
    assert stored(tmp_path / "results", envelope)["payload"] == {"answer": "é"}
    assert (report["actor"], report["event"], report["result"]) == (
        "x-sink", "succeeded", {"answer": "é"},
    )  # fmt: skip
    [batch] = [b for b in receiver.batches if b.reports]
    assert batch.actor == "x-sink"


async def test_x_sink_records_a_canceled_envelope_reports_it_and_keeps_it_from_x_sump(
    sink_handler: sink.Sink, receiver: ReportReceiver, tmp_path: Path
) -> None:
    envelope = crew_envelope(phase="canceled")
    envelope["status"]["reason"] = "Canceled"

    frames = await drive(sink_handler.handle(envelope["payload"]), envelope)
    [report] = await eventually(lambda: receiver.about(envelope["id"]), what="the report")

    assert frames == []  # not passed on to x-sump
    assert stored(tmp_path / "results", envelope)["status"]["phase"] == "canceled"
    assert (report["event"], report["reason"], report["error"]) == ("canceled", "Canceled", None)


async def test_x_sump_reports_only_what_did_not_come_through_x_sink(
    sump_handler: sump.Sump, receiver: ReportReceiver
) -> None:
    via_sink = crew_envelope(phase="failed")
    via_sink["route"] = {"prev": ["infer", "x-sink"], "curr": "x-sump", "next": []}
    direct = crew_envelope({"original": "{", "encoding": "utf-8"}, phase="failed")
    direct["route"] = {"prev": ["prep"], "curr": "x-sump", "next": []}
    direct["status"]["reason"] = "ParseError"

    await drive(sump_handler.handle(via_sink["payload"]), via_sink)
    assert sump_handler.reporter is not None
    assert len(sump_handler.reporter.pending) == 0  # nothing queued for it, ever
    await drive(sump_handler.handle(direct["payload"]), direct)
    [report] = await eventually(lambda: receiver.about(direct["id"]), what="the report")

    assert (report["actor"], report["event"], report["reason"]) == (
        "x-sump",
        "failed",
        "ParseError",
    )
    assert receiver.about(via_sink["id"]) == []


# ----------------------------------------------------------------- posting, for real


async def test_reports_wait_while_the_gateway_fails_and_arrive_in_order_after(
    receiver: ReportReceiver,
) -> None:
    reporter = CrewReporter(receiver.url, role="x-sink")
    receiver.fail_next(2, status=503)
    try:
        for i in range(3):
            report = reporting.terminal_report(crew_envelope(id=f"e{i}"), actor="x-sink", at=AT)
            assert report is not None
            reporter.report(report)

        await eventually(lambda: len(receiver.reports) == 3, what="the 3 reports")
    finally:
        await reporter.close()

    assert [r["id"] for r in receiver.reports] == ["e0", "e1", "e2"]
    assert [b.status for b in receiver.batches][:2] == [503, 503]


async def test_closing_lets_a_post_in_flight_finish_instead_of_sending_it_twice(
    receiver: ReportReceiver,
) -> None:
    reporter = CrewReporter(receiver.url, role="x-sink")
    receiver.hold()
    report = reporting.terminal_report(crew_envelope(id="e0"), actor="x-sink", at=AT)
    assert report is not None
    reporter.report(report)
    # The gateway has the batch; its answer is still on the way when the runtime stops.
    await eventually(lambda: len(receiver.batches) == 1, what="the batch, unanswered")
    closing = reporter.close()
    receiver.release()
    await closing

    assert [r["id"] for r in receiver.reports] == ["e0"]
    assert len(receiver.batches) == 1


async def test_a_gateway_that_is_down_never_fails_the_handler_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    handler = sink.Sink(
        {config.RESULT_STORE: f"file://{tmp_path}", "ASYA_GATEWAY_URL": closed_port_url()}
    )
    assert handler.reporter is not None
    handler.reporter.max_pending = 3
    before = dropped("x-sink")
    try:
        for i in range(6):
            envelope = crew_envelope(id=f"e{i}")
            assert await drive(handler.handle(envelope["payload"]), envelope) == []
            assert stored(tmp_path, envelope)["id"] == f"e{i}"
        # Each report beyond the bound pushed out an older one; nothing else was lost.
        assert len(handler.reporter.pending) <= 3
        await eventually(lambda: dropped("x-sink") - before >= 3, what="3 drops counted")
    finally:
        await handler.reporter.close()
