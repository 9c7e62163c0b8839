"""Whole pipelines of real processes (runtime + sidecar per actor, plus the crew), run on the
embedded transport and on RabbitMQ: routing, fan-out, failures, bad input, concurrency."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from asya_cli.local_pipeline import LocalPipeline
from asya_transports import Unsupported
from tests.support.pipeline import HANDLERS, StartPipeline, actor
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

ABC = [actor("a", "flow.mark_a"), actor("b", "flow.mark_b"), actor("c", "flow.mark_c")]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_multi_hop_reaches_the_sink_with_route_headers_and_trace(
    start_pipeline: StartPipeline,
) -> None:
    pipeline = await start_pipeline(ABC)

    envelope_id = await pipeline.send(
        ["a", "b", "c"],
        {"trail": []},
        headers={"x-tenant": "acme", "traceparent": TRACEPARENT},
        custom={"kept": 1},
    )
    result = await pipeline.result(envelope_id)

    assert result["payload"]["trail"] == ["a", "b", "c"]
    assert result["route"] == {"prev": ["a", "b", "c"], "curr": "x-sink", "next": []}
    assert result["status"]["phase"] == "succeeded"
    assert result["status"]["actor"] == "c"
    assert result["headers"]["x-tenant"] == "acme"
    trace_id = TRACEPARENT.split("-")[1]
    assert result["headers"]["traceparent"].split("-")[1] == trace_id
    assert result["headers"]["traceparent"] != TRACEPARENT  # a new span per hop


@pytest.mark.parametrize(
    ("payload", "trail", "prev"),
    [
        ({"detour": True}, ["router", "b", "c"], ["router", "b", "c"]),
        ({"stop_here": True}, ["router"], ["router"]),
        ({}, ["router", "c"], ["router", "c"]),
    ],
)
async def test_handler_rewrites_the_rest_of_the_route(
    start_pipeline: StartPipeline, payload: dict[str, bool], trail: list[str], prev: list[str]
) -> None:
    pipeline = await start_pipeline(
        [actor("router", "flow.router"), actor("b", "flow.mark_b"), actor("c", "flow.mark_c")]
    )

    envelope_id = await pipeline.send(["router", "c"], payload, headers={"x-tenant": "t1"})
    result = await pipeline.result(envelope_id)

    assert result["payload"]["trail"] == trail
    assert result["route"]["prev"] == prev
    assert result["headers"]["seen-tenant"] == "t1"


async def test_fan_out_gives_each_part_its_own_envelope(start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline([actor("split", "flow.split"), actor("c", "flow.mark_c")])

    envelope_id = await pipeline.send(["split", "c"], {"n": 3})
    ids = [envelope_id, f"{envelope_id}-1", f"{envelope_id}-2"]
    results = await pipeline.results(ids)

    assert [results[i]["payload"]["part"] for i in ids] == [0, 1, 2]
    assert [results[i]["payload"]["trail"] for i in ids] == [["c"]] * 3
    assert [results[i].get("parent_id") for i in ids] == [None, envelope_id, envelope_id]


async def test_none_finishes_as_succeeded_with_the_payload_as_it_came(
    start_pipeline: StartPipeline,
) -> None:
    pipeline = await start_pipeline([actor("quiet", "flow.nothing"), actor("c", "flow.mark_c")])

    envelope_id = await pipeline.send(["quiet", "c"], {"keep": "me"})
    result = await pipeline.result(envelope_id)

    assert result["status"]["phase"] == "succeeded"
    assert result["payload"] == {"keep": "me"}
    assert result["route"] == {"prev": ["quiet"], "curr": "x-sink", "next": ["c"]}


async def test_handler_error_is_stored_failed_and_collected_by_the_sump(
    start_pipeline: StartPipeline,
) -> None:
    pipeline = await start_pipeline([actor("boom", "flow.boom"), actor("c", "flow.mark_c")])

    envelope_id = await pipeline.send(["boom", "c"], {"x": 1})
    result = await pipeline.result(envelope_id)
    [sumped] = await pipeline.wait_sump(1)

    assert result["status"]["phase"] == "failed"
    assert result["status"]["reason"] == "HandlerError"
    assert result["status"]["actor"] == "boom"
    error = result["status"]["error"]
    assert error["type"] == "flow.BadInput"
    assert error["mro"][:3] == ["flow.BadInput", "ValueError", "Exception"]
    assert "cannot handle" in error["message"]
    assert "flow.py" in error["traceback"]
    assert sumped["id"] == envelope_id
    assert sumped["status"] == result["status"]


BAD_INPUT = [
    (b"not json at all", "ParseError", "utf-8"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "ParseError", "base64"),
    (b"[1, 2, 3]", "ParseError", "utf-8"),
    (
        json.dumps({"id": "no-payload", "route": {"curr": "a", "next": []}}).encode(),
        "ParseError",
        "utf-8",
    ),
    (
        json.dumps({"id": "wrong", "route": {"curr": "b", "next": []}, "payload": 1}).encode(),
        "WrongActor",
        "utf-8",
    ),
    (
        json.dumps(
            {"id": "bad-name", "route": {"curr": "a", "next": ["B A D"]}, "payload": 1}
        ).encode(),
        "ParseError",
        "utf-8",
    ),
]


async def test_every_kind_of_bad_input_lands_in_the_sump_with_its_reason(
    start_pipeline: StartPipeline,
) -> None:
    pipeline = await start_pipeline([actor("a", "flow.mark_a")])

    for body, _, _ in BAD_INPUT:
        await pipeline.send_raw("a", body)
    records = await pipeline.wait_sump(len(BAD_INPUT))

    by_original = {}
    for stored in records:
        original = stored["payload"]["original"]
        raw = (
            base64.b64decode(original)
            if stored["payload"]["encoding"] == "base64"
            else original.encode()
        )
        by_original[raw] = stored
    for body, reason, encoding in BAD_INPUT:
        stored = by_original[body]
        assert stored["status"]["reason"] == reason
        assert stored["status"]["phase"] == "failed"
        assert stored["payload"]["encoding"] == encoding
        assert stored["status"]["actor"] == "a"
    # Acked, not redelivered: the queue is empty again (where the broker can say so).
    with contextlib.suppress(Unsupported):
        assert await pipeline.transport.queue_depth(pipeline.pipeline.queue("a")) == 0
    assert len(pipeline.sump_records()) == len(BAD_INPUT)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [({"bad_next": True}, "RouteViolation"), ({"ghost_next": True}, "UnknownActor")],
)
async def test_results_naming_impossible_actors_go_to_the_sump(
    start_pipeline: StartPipeline, payload: dict[str, bool], reason: str
) -> None:
    pipeline = await start_pipeline([actor("router", "flow.router")])

    envelope_id = await pipeline.send(["router"], payload)
    [stored] = await pipeline.wait_sump(1)

    assert stored["id"] == envelope_id
    assert stored["status"]["reason"] == reason


@pytest.mark.parametrize("forge", ["prev", "curr"])
async def test_frames_that_rewrite_prev_or_curr_are_refused(
    start_pipeline: StartPipeline, forge: str
) -> None:
    def foreign_runtime(pipeline: LocalPipeline) -> None:
        pipeline.specs = [
            spec
            if spec.name != "a/runtime"
            else type(spec)(
                actor=spec.actor,
                role=spec.role,
                env=spec.env,
                cwd=spec.cwd,
                argv=(sys.executable, str(HANDLERS / "forging_runtime.py")),
            )
            for spec in pipeline.specs
        ]

    pipeline = await start_pipeline([actor("a", "flow.mark_a")], prepare=foreign_runtime)

    envelope_id = await pipeline.send(["a"], {"forge": forge})
    [stored] = await pipeline.wait_sump(1)

    assert stored["id"] == envelope_id
    assert stored["status"]["reason"] == "RouteViolation"
    assert f"route.{forge}" in stored["status"]["error"]["message"]
    assert json.loads(stored["payload"]["original"])["payload"] == {"forge": forge}


async def test_concurrency_runs_envelopes_side_by_side(start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline([actor("slow", "flow.hold", concurrency=4)])

    ids = [await pipeline.send(["slow"], {"i": i, "hold_s": 0.5}) for i in range(4)]
    results = await pipeline.results(ids)

    windows = [results[i]["payload"] for i in ids]
    # All four were inside the handler at one moment (timestamps from inside the handler).
    assert max(w["start"] for w in windows) < min(w["end"] for w in windows)


async def test_sigterm_drains_in_flight_work_and_loses_nothing(
    start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    pipeline = await start_pipeline([actor("slow", "flow.hold_marked", concurrency=2)])
    markers = [tmp_path / f"started-{i}" for i in range(8)]
    ids = [
        await pipeline.send(["slow"], {"i": i, "hold_s": 1.0, "started": str(marker)})
        for i, marker in enumerate(markers)
    ]
    # The signal must find work in flight: the third call has started and holds for 1 s.
    # (Waiting for the first result instead raced a slow broker's next delivery: at times
    # nothing was in flight, and nothing was drained.)
    await eventually(markers[2].exists, what="the third call to start")

    sidecar = pipeline.pipeline.supervisor
    os.kill(sidecar.pid("slow/sidecar"), signal.SIGTERM)
    results = await pipeline.results(ids)

    assert sidecar.exit_codes("slow/sidecar") == [0]  # drained and stopped cleanly...
    assert sidecar.restarts("slow/sidecar") == 1  # ...and came back, like a pod would
    assert all(r["status"]["phase"] == "succeeded" for r in results.values())
    assert "draining" in pipeline.log_path.read_text()


async def test_runtime_crash_requeues_and_the_sidecar_waits_for_it(
    start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    pipeline = await start_pipeline([actor("slow", "flow.hold_marked")])
    supervisor = pipeline.pipeline.supervisor
    started = tmp_path / "started"
    envelope_id = await pipeline.send(["slow"], {"hold_s": 2.0, "started": str(started)})
    await eventually(started.exists, "the handler to start")

    os.kill(supervisor.pid("slow/runtime"), signal.SIGKILL)  # dies under the envelope
    result = await pipeline.result(envelope_id)

    assert result["status"]["phase"] == "succeeded"
    assert supervisor.restarts("slow/runtime") == 1
    assert started.read_text().count("started") == 2  # the handler ran again after requeue
    assert "runtime unavailable, pausing consumption" in pipeline.log_path.read_text()
