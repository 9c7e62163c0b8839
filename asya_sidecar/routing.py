"""What becomes of an envelope once the runtime has answered: pure decisions, no I/O.

In: the envelope (or why it could not be parsed), the runtime's typed answer, and a Context
holding everything that would otherwise need a clock or a random source. Out: a Decision,
the messages to send and a label for the outcome. The consumer carries it out: it sends every
output and acks the input only when all of them are confirmed.

A handler failure follows the actor's resiliency policy (resiliency.py): retry on the
actor's own queue after a delay, go on to the policy's thenRoute, or finish as failed.

Crew actors (x-sink, x-sump) are the end of every road: what they finish goes nowhere, and a
failure of theirs (a result store that is down) is retried later on their own queue, never
sent to x-sink, which would loop. Deadlines do not apply to them: results are always kept.

A handler may park the envelope (`yield "PARK", note`): the call ends with no result and
nothing is sent; something outside the pipeline holds the envelope and continues it later
(a batch job launched by asya_callers.jobs, which the operator's job watcher continues).
The holding crew actors (x-join, x-pause) park everything they take in and report for
themselves; no deadline is checked at them.

Results that still have an unclaimed x-join ahead open a join (fanin.py): they become its
parts, and one more message, the opener, goes to x-join.

A task canceled at the gateway is finished at its next hop without calling the handler
(`canceled`): phase "canceled", reason "Canceled", no error, to x-sink, which records it and
does not hand it to x-sump.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from asya_shared import joins, names, wire
from asya_sidecar import envelope, fanin, resiliency
from asya_sidecar.envelope import Envelope, Invalid, Phase, Reason
from asya_sidecar.resiliency import GiveUp, Resiliency, Retry, RouteTo
from asya_sidecar.runtime_client import Frames, HandlerError, NoResult, Parked, Refused, Result
from asya_sidecar.tracing import TraceContext

# The error type the runtime reports when a handler overran its timeout (see the runtime).
ACTOR_TIMEOUT = "ActorTimeout"


class Outcome(StrEnum):
    ROUTED = "routed"  # results went on to the next actors
    SUCCEEDED = "succeeded"  # the route is finished: x-sink, phase succeeded
    FAILED = "failed"  # the handler failed: x-sink, phase failed
    SUMPED = "sumped"  # unusable input or result: x-sump
    RETRIED = "retried"  # sent back to this actor's own queue, to be tried again later
    DONE = "done"  # a crew actor finished; nothing more to send
    CANCELED = "canceled"  # canceled at the gateway: x-sink, phase canceled, handler not called
    PARKED = "parked"  # the handler parked it (yield "PARK"): acked, nothing sent from here


@dataclass(frozen=True)
class Output:
    actor: str  # where it goes; the consumer maps actors to queues
    body: bytes
    delay: float = 0.0
    # The envelope `body` encodes, for the status reports about it (reporting.py); None for
    # what goes to x-sump, which x-sump itself reports.
    fields: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    outputs: tuple[Output, ...] = ()
    reason: Reason | None = None


@dataclass(frozen=True)
class Context:
    actor: str
    now: datetime.datetime
    trace: TraceContext
    new_id: str  # id for a sump envelope when the input had none
    max_message_bytes: int
    crew_retry_delay: float
    resiliency: Resiliency = field(default_factory=Resiliency)
    rand: float = 0.0  # a uniform draw in [0, 1) for retry jitter
    # This actor's namespace: an opener tells x-join (which may live in the crew's) where
    # the joined envelope's next actor is.
    namespace: str = ""

    @property
    def is_crew(self) -> bool:
        return self.actor in names.CREW

    @property
    def holds(self) -> bool:
        """x-join, x-pause: they keep what they park and report it themselves."""
        return self.actor in names.HOLDING


def reject(body: bytes, invalid: Invalid, ctx: Context) -> Decision:
    """Unusable input (or a result that cannot be used): the original bytes go to x-sump."""
    fields = invalid.fields or {}
    headers = fields.get("headers") if isinstance(fields.get("headers"), dict) else {}
    sump = envelope.wrap_for_sump(
        body,
        invalid,
        actor=ctx.actor,
        new_id=ctx.new_id,
        headers=_traced(headers or {}, ctx),
        now=ctx.now,
        limit=ctx.max_message_bytes,
    )
    return Decision(Outcome.SUMPED, (Output(names.SUMP, envelope.encode(sump)),), invalid.reason)


def decide(env: Envelope, result: Result, *, body: bytes, ctx: Context) -> Decision:
    """The decision after the runtime answered `result` for `env` (received as `body`)."""
    if isinstance(result, Frames) and result.frames:
        return _route_frames(env, result.frames, body=body, ctx=ctx)
    if isinstance(result, Parked):
        # Continued later by whoever the handler handed it to (asya_callers.jobs: the
        # operator's job watcher); a crew actor has nothing to continue.
        return Decision(Outcome.DONE if ctx.is_crew or ctx.holds else Outcome.PARKED)
    if isinstance(result, Frames | NoResult):
        return _finished(env, ctx)
    if isinstance(result, HandlerError):
        timed_out = result.details["type"] == ACTOR_TIMEOUT
        reason = Reason.TIMEOUT if timed_out else Reason.HANDLER_ERROR
        return handler_failed(env, result.details, body=body, reason=reason, ctx=ctx)
    assert isinstance(result, Refused)
    return reject(body, Invalid(Reason.INVALID_RESULT, result.message, env.fields), ctx)


def is_canceled(env: Envelope, canceled: Collection[str]) -> bool:
    """Whether the envelope belongs to a canceled task: its own id, the task it was fanned
    out from (`parent_id`) or the origin of any join it is a part of (nested fan-outs) is
    among the `canceled` ids the gateway announced."""
    if not canceled:
        return False
    if env.id in canceled or env.fields.get("parent_id") in canceled:
        return True
    try:
        return any(level.origin in canceled for level in joins.levels(env.headers))
    except joins.InvalidJoin:
        return False


def canceled(env: Envelope, ctx: Context) -> Decision:
    """The task was canceled: finish the envelope here without calling the handler.

    It goes to x-sink like any finished envelope (so the cancellation is recorded with the
    payload as it stood), with no error, so x-sink does not pass it on to x-sump.
    """
    done = envelope.finish(
        env,
        phase=Phase.CANCELED,
        headers=_traced(env.headers, ctx),
        now=ctx.now,
        reason=Reason.CANCELED,
    )
    output = Output(names.SINK, envelope.encode(done), fields=done)
    return Decision(Outcome.CANCELED, (output,), Reason.CANCELED)


def past_deadline(env: Envelope, ctx: Context) -> bool:
    # A holding crew actor only takes the envelope in: x-join must count a late part, and a
    # task's deadline does not run while a person has it (x-pause).
    held = ctx.is_crew or ctx.holds
    return env.deadline is not None and ctx.now >= env.deadline and not held


def expired(env: Envelope, ctx: Context) -> Decision:
    """The envelope's deadline passed before this actor started: fail it, do not call."""
    assert env.deadline is not None
    details = wire.error_details(
        "DeadlineExceeded",
        f"status.deadline_at {envelope.timestamp(env.deadline)} passed before {ctx.actor!r} "
        "started",
        mro=["DeadlineExceeded", "TimeoutError"],
    )
    return _fail(env, details, reason=Reason.TIMEOUT, ctx=ctx)


def handler_failed(
    env: Envelope,
    details: wire.ErrorDetails,
    *,
    body: bytes,
    reason: Reason,
    ctx: Context,
) -> Decision:
    """The handler raised or timed out: retry, reroute or fail, as the actor's policy says."""
    if ctx.is_crew:
        return Decision(
            Outcome.RETRIED, (Output(ctx.actor, body, delay=ctx.crew_retry_delay),), reason
        )
    policy = resiliency.choose(ctx.resiliency, details["mro"])
    since = env.retrying_since(ctx.now)
    time_left = None if env.deadline is None else (env.deadline - ctx.now).total_seconds()
    step = resiliency.after_failure(
        policy,
        attempt=env.attempt,
        retrying_for=(ctx.now - since).total_seconds(),
        rand=ctx.rand,
        time_left=time_left,
        retry_after=details.get("retry_after"),
    )
    headers = _traced(env.headers, ctx)
    if isinstance(step, Retry):
        again = envelope.retry(
            env, attempt=step.attempt, max_attempts=policy.max_attempts, retrying_since=since,
            headers=headers, now=ctx.now, reason=reason, error=details,
        )  # fmt: skip
        output = Output(ctx.actor, envelope.encode(again), delay=step.delay, fields=again)
        return Decision(Outcome.RETRIED, (output,), reason)
    if isinstance(step, RouteTo):
        destination, rerouted = envelope.reroute(
            env, step.actors, headers=headers, now=ctx.now, reason=Reason.POLICY_ROUTED,
            error=details,
        )  # fmt: skip
        output = Output(destination, envelope.encode(rerouted), fields=rerouted)
        return Decision(Outcome.ROUTED, (output,), Reason.POLICY_ROUTED)
    assert isinstance(step, GiveUp)
    if step.by_deadline:
        reason = Reason.TIMEOUT
    elif policy.max_attempts > 1:
        reason = Reason.POLICY_EXHAUSTED
    return _fail(env, details, reason=reason, ctx=ctx)


def _fail(env: Envelope, details: wire.ErrorDetails, *, reason: Reason, ctx: Context) -> Decision:
    failed = envelope.finish(
        env,
        phase=Phase.FAILED,
        headers=_traced(env.headers, ctx),
        now=ctx.now,
        reason=reason,
        error=details,
    )
    return Decision(Outcome.FAILED, (Output(names.SINK, envelope.encode(failed)),), reason)


def unroutable(fields: Mapping[str, Any], *, destination: str, detail: str, ctx: Context) -> Output:
    """An output whose destination queue does not exist goes to x-sump instead."""
    message = f"no queue for actor {destination!r}: {detail}"
    sump = envelope.to_sump(
        fields, actor=ctx.actor, reason=Reason.UNKNOWN_ACTOR, message=message, now=ctx.now
    )
    return Output(names.SUMP, envelope.encode(sump))


def _finished(env: Envelope, ctx: Context) -> Decision:
    if ctx.is_crew:
        return Decision(Outcome.DONE)
    done = envelope.finish(
        env, phase=Phase.SUCCEEDED, headers=_traced(env.headers, ctx), now=ctx.now
    )
    return Decision(Outcome.SUCCEEDED, (Output(names.SINK, envelope.encode(done), fields=done),))


def _route_frames(
    env: Envelope, raw_frames: list[wire.Frame], *, body: bytes, ctx: Context
) -> Decision:
    frames = []
    for raw in raw_frames:
        checked = envelope.check_frame(env, raw)
        if isinstance(checked, Invalid):
            return reject(body, Invalid(checked.reason, checked.message, env.fields), ctx)
        frames.append(checked)
    try:
        join = None if ctx.is_crew else fanin.plan(env, frames, now=ctx.now, ns=ctx.namespace)
    except joins.InvalidJoin as exc:
        return reject(body, Invalid(Reason.INVALID_RESULT, str(exc), env.fields), ctx)
    outputs = []
    for index, frame in enumerate(frames):
        destination, out = envelope.forward(
            env,
            frame,
            index=index,
            headers=_traced(frame.headers, ctx),
            now=ctx.now,
            keep_status=ctx.is_crew,
        )
        if ctx.is_crew and destination == names.SINK:
            continue  # a crew actor's finished work ends here
        if join is not None:
            out = join.part(out, index)
        data = envelope.encode(out)
        if len(data) > ctx.max_message_bytes:
            message = (
                f"result {index} is {len(data)} bytes; the transport accepts at most "
                f"{ctx.max_message_bytes}"
            )
            return reject(body, Invalid(Reason.OVERSIZE_RESULT, message, env.fields), ctx)
        outputs.append(Output(destination, data, fields=out))
    if join is not None:
        opener = join.opener(env, _traced(frames[0].headers, ctx), ctx.now)
        data = envelope.encode(opener)
        if len(data) > ctx.max_message_bytes:
            message = (
                f"the payload handed to x-join is {len(data)} bytes; the transport accepts at "
                f"most {ctx.max_message_bytes}"
            )
            return reject(body, Invalid(Reason.OVERSIZE_RESULT, message, env.fields), ctx)
        outputs.append(Output(names.JOIN, data, fields=opener))
    if not outputs:
        return Decision(Outcome.DONE)
    if all(output.actor == names.SINK for output in outputs):
        return Decision(Outcome.SUCCEEDED, tuple(outputs))
    return Decision(Outcome.ROUTED, tuple(outputs))


def _traced(headers: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    return {**headers, "traceparent": ctx.trace.traceparent}
