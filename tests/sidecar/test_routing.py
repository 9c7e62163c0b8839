"""routing.py: the pure decision after the runtime answered."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from typing import Any

import pytest

from asya_shared import wire
from asya_sidecar import envelope, resiliency, routing, runtime_client
from asya_sidecar.consumer import feasible_delay
from asya_sidecar.envelope import Envelope, Invalid, Reason
from asya_sidecar.routing import Context, Outcome
from asya_sidecar.runtime_client import Frames, HandlerError, NoResult, Parked, Refused
from asya_sidecar.tracing import TraceContext

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
TRACE = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def ctx(actor: str = "infer", *, max_bytes: int = 1_000_000) -> Context:
    return Context(
        actor=actor,
        now=NOW,
        trace=TRACE,
        new_id="fresh-id",
        max_message_bytes=max_bytes,
        crew_retry_delay=10.0,
    )


def incoming(actor: str = "infer", **overrides: Any) -> tuple[Envelope, bytes]:
    fields: dict[str, Any] = {
        "id": "e1",
        "route": {"prev": ["prep"], "curr": actor, "next": ["post"]},
        "headers": {"tenant": "acme"},
        "payload": {"n": 1},
    }
    fields.update(overrides)
    body = json.dumps(fields).encode()
    parsed = envelope.parse(body, actor=actor)
    assert isinstance(parsed, Envelope)
    return parsed, body


def frame(payload: Any, next_: list[str], **headers: Any) -> wire.Frame:
    return {
        "payload": payload,
        "route": {"prev": ["prep"], "curr": "infer", "next": next_},
        "headers": {"tenant": "acme", **headers},
    }


def sent(decision: routing.Decision) -> list[tuple[str, dict[str, Any]]]:
    return [(o.actor, json.loads(o.body)) for o in decision.outputs]


def test_one_frame_goes_to_the_next_actor_with_the_trace_continued() -> None:
    env, body = incoming()

    decision = routing.decide(env, Frames([frame({"n": 2}, ["post"])]), body=body, ctx=ctx())

    assert decision.outcome == Outcome.ROUTED
    [(actor, out)] = sent(decision)
    assert actor == "post"
    assert out["payload"] == {"n": 2}
    assert out["headers"]["traceparent"] == TRACE.traceparent
    assert out["headers"]["tenant"] == "acme"


def test_handler_rewriting_next_sends_elsewhere() -> None:
    env, body = incoming()

    decision = routing.decide(env, Frames([frame({}, ["review", "post"])]), body=body, ctx=ctx())

    [(actor, out)] = sent(decision)
    assert actor == "review"
    assert out["route"]["next"] == ["post"]


def test_fan_out_sends_one_envelope_per_frame() -> None:
    env, body = incoming()
    frames = [frame({"part": i}, ["post"]) for i in range(3)]

    decision = routing.decide(env, Frames(frames), body=body, ctx=ctx())

    outs = sent(decision)
    assert [o["id"] for _, o in outs] == ["e1", "e1-1", "e1-2"]
    assert [o.get("parent_id") for _, o in outs] == [None, "e1", "e1"]
    assert [o["payload"] for _, o in outs] == [{"part": 0}, {"part": 1}, {"part": 2}]


def test_last_step_finishes_at_the_sink() -> None:
    env, body = incoming(route={"prev": [], "curr": "infer", "next": []})

    decision = routing.decide(env, Frames([{"payload": 5}]), body=body, ctx=ctx())

    assert decision.outcome == Outcome.SUCCEEDED
    [(actor, out)] = sent(decision)
    assert actor == "x-sink"
    assert out["status"]["phase"] == "succeeded"


@pytest.mark.parametrize("result", [NoResult(), Frames([], fly=[{"progress": 1}])])
def test_no_result_finishes_succeeded_with_the_payload_unchanged(result: Any) -> None:
    env, body = incoming()

    decision = routing.decide(env, result, body=body, ctx=ctx())

    assert decision.outcome == Outcome.SUCCEEDED
    [(actor, out)] = sent(decision)
    assert actor == "x-sink"
    assert out["payload"] == {"n": 1}
    assert out["route"] == {"prev": ["prep", "infer"], "curr": "x-sink", "next": ["post"]}


def test_handler_error_finishes_failed_with_the_error() -> None:
    env, body = incoming()
    details: wire.ErrorDetails = {
        "type": "ValueError",
        "mro": ["ValueError", "Exception"],
        "message": "m",
        "traceback": "T",
    }

    decision = routing.decide(env, HandlerError(details), body=body, ctx=ctx())

    assert decision.outcome == Outcome.FAILED
    assert decision.reason == Reason.HANDLER_ERROR
    [(actor, out)] = sent(decision)
    assert actor == "x-sink"
    assert out["status"]["phase"] == "failed"
    assert out["status"]["error"] == details


def test_route_violation_sends_the_original_bytes_to_the_sump() -> None:
    env, body = incoming()
    forged: wire.Frame = {"payload": 1, "route": {"prev": [], "curr": "infer", "next": []}}

    decision = routing.decide(env, Frames([frame(1, ["post"]), forged]), body=body, ctx=ctx())

    assert decision.outcome == Outcome.SUMPED
    assert decision.reason == Reason.ROUTE_VIOLATION
    [(actor, out)] = sent(decision)
    assert actor == "x-sump"
    assert out["id"] == "e1"
    assert json.loads(out["payload"]["original"]) == json.loads(body)
    assert "route.prev" in out["status"]["error"]["message"]


def test_oversize_result_goes_to_the_sump_instead() -> None:
    env, body = incoming()

    decision = routing.decide(
        env, Frames([frame("x" * 5000, ["post"])]), body=body, ctx=ctx(max_bytes=4000)
    )

    assert decision.reason == Reason.OVERSIZE_RESULT
    [(actor, out)] = sent(decision)
    assert actor == "x-sump"
    assert "4000" in out["status"]["error"]["message"]


def test_runtime_refusal_is_sumped_as_invalid_result() -> None:
    env, body = incoming()

    decision = routing.decide(env, Refused("the runtime refused"), body=body, ctx=ctx())

    assert decision.reason == Reason.INVALID_RESULT
    assert sent(decision)[0][0] == "x-sump"


def test_rejected_input_without_id_gets_a_fresh_one() -> None:
    decision = routing.reject(b"garbage", Invalid(Reason.PARSE_ERROR, "not JSON"), ctx())

    [(actor, out)] = sent(decision)
    assert actor == "x-sump"
    assert out["id"] == "fresh-id"
    assert out["payload"] == {"original": "garbage", "encoding": "utf-8"}


def test_unroutable_output_is_readdressed_to_the_sump() -> None:
    fields = {"id": "e1", "route": {"prev": ["a"], "curr": "ghost", "next": ["b"]}, "payload": 1}

    output = routing.unroutable(fields, destination="ghost", detail="gone", ctx=ctx())

    out = json.loads(output.body)
    assert output.actor == "x-sump"
    assert out["status"]["reason"] == "UnknownActor"
    assert "ghost" in out["status"]["error"]["message"]
    # Where it was headed stays, behind x-sump, for a redrive once "ghost" exists.
    assert out["route"] == {"prev": ["a"], "curr": "x-sump", "next": ["ghost", "b"]}


# Crew actors end the road: nothing they finish is sent on, failures retry on their queue.


@pytest.mark.parametrize("crew", ["x-sink", "x-sump"])
def test_crew_with_no_result_is_done(crew: str) -> None:
    env, body = incoming(crew, route={"prev": ["a"], "curr": crew, "next": []})

    decision = routing.decide(env, NoResult(), body=body, ctx=ctx(crew))

    assert decision == routing.Decision(Outcome.DONE)


def test_sink_relays_failures_to_the_sump_keeping_their_status() -> None:
    status = {"phase": "failed", "reason": "RuntimeError", "actor": "a"}
    env, body = incoming(
        "x-sink", route={"prev": ["a"], "curr": "x-sink", "next": []}, status=status
    )
    relay: wire.Frame = {
        "payload": {"n": 1},
        "route": {"prev": ["a"], "curr": "x-sink", "next": ["x-sump"]},
    }

    decision = routing.decide(env, Frames([relay]), body=body, ctx=ctx("x-sink"))

    [(actor, out)] = sent(decision)
    assert actor == "x-sump"
    assert out["status"] == status
    assert decision.outcome == Outcome.ROUTED


def test_crew_frame_with_nothing_next_is_done_not_looped_to_the_sink() -> None:
    env, body = incoming("x-sink", route={"prev": ["a"], "curr": "x-sink", "next": []})
    relay: wire.Frame = {"payload": 1, "route": {"prev": ["a"], "curr": "x-sink", "next": []}}

    decision = routing.decide(env, Frames([relay]), body=body, ctx=ctx("x-sink"))

    assert decision.outcome == Outcome.DONE
    assert decision.outputs == ()


def test_crew_failure_retries_later_on_its_own_queue() -> None:
    env, body = incoming("x-sink", route={"prev": ["a"], "curr": "x-sink", "next": []})

    decision = routing.decide(
        env, HandlerError(wire.error_details("OSError", "down")), body=body, ctx=ctx("x-sink")
    )

    assert decision.outcome == Outcome.RETRIED
    [output] = decision.outputs
    assert (output.actor, output.body, output.delay) == ("x-sink", body, 10.0)


# Resiliency: what a handler failure turns into under a policy.

POLICIES = resiliency.parse({
    "policies": {
        "default": {"maxAttempts": 3, "backoff": "constant", "initialDelay": "2s"},
        "fallback": {"maxAttempts": 1, "thenRoute": ["backup", "post"]},
        "short": {"maxAttempts": 5, "initialDelay": "10s", "maxDuration": "15s"},
    },
    "rules": [{"errors": ["mylib.FatalError"], "policy": "fallback"},
              {"errors": ["SlowError"], "policy": "short"}],
})  # fmt: skip
ERROR = wire.error_details("ValueError", "m", mro=["ValueError", "Exception"], traceback="T")


def failing_ctx(**overrides: Any) -> Context:
    return dataclasses.replace(ctx(), resiliency=POLICIES, rand=0.0, **overrides)


def test_a_failure_with_attempts_left_is_retried_on_the_actors_own_queue() -> None:
    env, body = incoming()

    decision = routing.decide(env, HandlerError(ERROR), body=body, ctx=failing_ctx())

    assert decision.outcome == Outcome.RETRIED
    [output] = decision.outputs
    assert (output.actor, output.delay) == ("infer", 2.0)
    retry = json.loads(output.body)
    assert retry["route"] == env.fields["route"]
    assert retry["payload"] == env.payload
    assert retry["status"]["phase"] == "retrying"
    assert retry["status"]["attempt"] == 2
    assert retry["status"]["max_attempts"] == 3
    assert retry["status"]["retry_since"] == "2026-11-24T12:00:00.000Z"
    assert retry["status"]["error"] == ERROR


def test_the_attempt_count_carries_over_between_retries() -> None:
    status = {
        "phase": "retrying",
        "actor": "infer",
        "attempt": 3,
        "max_attempts": 3,
        "retry_since": "2026-11-24T11:59:50.000Z",
    }
    env, body = incoming(status=status)

    decision = routing.decide(env, HandlerError(ERROR), body=body, ctx=failing_ctx())

    assert decision.outcome == Outcome.FAILED
    assert decision.reason == Reason.POLICY_EXHAUSTED
    [(actor, out)] = sent(decision)
    assert actor == "x-sink"
    assert out["status"]["attempt"] == 3
    assert out["status"]["reason"] == "PolicyExhausted"


def test_an_attempt_count_of_another_actor_does_not_count_here() -> None:
    status = {"phase": "retrying", "actor": "prep", "attempt": 3}
    env, body = incoming(status=status)

    decision = routing.decide(env, HandlerError(ERROR), body=body, ctx=failing_ctx())

    assert json.loads(decision.outputs[0].body)["status"]["attempt"] == 2


def test_a_rule_matching_a_base_class_through_the_mro_picks_its_policy() -> None:
    env, body = incoming()
    error: wire.ErrorDetails = {
        **ERROR,
        "type": "mylib._impl.GPUFatal",
        "mro": ["mylib._impl.GPUFatal", "mylib._impl.FatalError", "Exception"],
    }

    decision = routing.decide(env, HandlerError(error), body=body, ctx=failing_ctx())

    assert decision.outcome == Outcome.ROUTED
    assert decision.reason == Reason.POLICY_ROUTED
    [(actor, out)] = sent(decision)
    assert actor == "backup"
    assert out["route"] == {"prev": ["prep", "infer"], "curr": "backup", "next": ["post"]}
    assert out["status"]["reason"] == "PolicyRouted"
    assert out["status"]["error"]["type"] == "mylib._impl.GPUFatal"


def test_max_duration_stops_retries_that_would_start_too_late() -> None:
    status = {
        "phase": "retrying",
        "actor": "infer",
        "attempt": 2,
        "retry_since": "2026-11-24T11:59:50.000Z",
    }  # 10 s ago; next delay is 10 s
    env, body = incoming(status=status)
    error: wire.ErrorDetails = {**ERROR, "type": "SlowError", "mro": ["SlowError"]}

    decision = routing.decide(env, HandlerError(error), body=body, ctx=failing_ctx())

    assert decision.reason == Reason.POLICY_EXHAUSTED


def test_a_timeout_reported_by_the_runtime_keeps_its_reason() -> None:
    env, body = incoming()
    timeout = wire.error_details("ActorTimeout", "t", mro=["ActorTimeout", "TimeoutError"])

    decision = routing.decide(env, HandlerError(timeout), body=body, ctx=ctx())

    assert decision.reason == Reason.TIMEOUT
    assert sent(decision)[0][1]["status"]["reason"] == "Timeout"


@pytest.mark.parametrize("details", [{"mro": 5}, {"mro": "abc"}, {"type": None}, [], None])
def test_odd_details_from_the_runtime_are_routed_by_type_and_never_crash(details: object) -> None:
    env, body = incoming()
    raw = json.dumps({"error": "processing_error", "details": details}).encode()

    decision = routing.decide(env, runtime_client._interpret(500, raw), body=body, ctx=ctx())

    assert decision.outcome == Outcome.FAILED
    [(_, out)] = sent(decision)
    assert list(out["status"]["error"]) == ["type", "mro", "message", "traceback"]


def test_an_envelope_past_its_deadline_fails_without_a_call() -> None:
    env, _ = incoming(status={"deadline_at": "2026-11-24T11:00:00Z"})

    assert routing.past_deadline(env, ctx())
    decision = routing.expired(env, ctx())

    assert decision.reason == Reason.TIMEOUT
    [(actor, out)] = sent(decision)
    assert actor == "x-sink"
    assert out["status"]["deadline_at"] == "2026-11-24T11:00:00Z"
    assert out["status"]["error"] == {
        "type": "DeadlineExceeded",
        "mro": ["DeadlineExceeded", "TimeoutError"],
        "message": "status.deadline_at 2026-11-24T11:00:00.000Z passed before 'infer' started",
        "traceback": None,
    }


def test_a_deadline_that_leaves_no_room_for_the_delay_ends_retries_as_a_timeout() -> None:
    env, body = incoming(status={"deadline_at": "2026-11-24T12:00:01Z"})

    decision = routing.decide(env, HandlerError(ERROR), body=body, ctx=failing_ctx())

    assert decision.reason == Reason.TIMEOUT


def test_crew_actors_ignore_deadlines() -> None:
    env, _ = incoming(
        "x-sink",
        route={"prev": ["a"], "curr": "x-sink", "next": []},
        status={"deadline_at": "2000-01-01T00:00:00Z"},
    )

    assert not routing.past_deadline(env, ctx("x-sink"))


@pytest.mark.parametrize(
    ("delay", "longest", "expected"),
    [(5.0, 900.0, 5.0), (900.0, 900.0, 900.0), (86400.0, 900.0, 900.0), (1e9, math.inf, 1e9)],
)
def test_a_delay_is_shortened_to_what_the_broker_can_hold(
    delay: float, longest: float, expected: float
) -> None:
    assert feasible_delay(delay, longest) == expected


def test_a_parked_envelope_is_acked_and_sent_nowhere() -> None:
    env, body = incoming()

    decision = routing.decide(env, Parked({"job": "j"}, fly=[{"x": 1}]), body=body, ctx=ctx())

    assert decision.outcome is Outcome.PARKED
    assert decision.outputs == ()
    assert decision.reason is None
