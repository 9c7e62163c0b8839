"""The consume loop: queue -> runtime -> next queues, at most `concurrency` envelopes at once.

This is the I/O shell around routing.py. For each delivery it parses the envelope once, calls
the runtime, asks routing for a decision, sends every output and acks the input only after
all of them are confirmed, so a crash anywhere can duplicate an envelope but never lose one.

With a gateway configured (reporting.py), the reporter learns what happens to each envelope
(plain appends, posted in the background) and an envelope of a canceled task is finished
without calling the handler; without one there is no reporter and no per-envelope work.

When the runtime stops answering, the delivery in hand is requeued, consumption pauses (and
/healthz turns 503) until the runtime is back. On stop, no new deliveries are taken, work in
flight gets `shutdown_timeout` seconds to finish, and whatever is still running is requeued.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from asya_shared import names, wire
from asya_sidecar import envelope, routing
from asya_sidecar.call_gate import CallGate
from asya_sidecar.config import SidecarConfig
from asya_sidecar.crash_ledger import CRASH_ALONE_LIMIT, DELIVERY_BACKSTOP, CrashLedger, Verdict
from asya_sidecar.envelope import Invalid, Reason
from asya_sidecar.events import EventForwarder
from asya_sidecar.logs import envelope_context
from asya_sidecar.metrics import SidecarMetrics
from asya_sidecar.reporting import Hop, Reporter, outcome_reports
from asya_sidecar.runtime_client import (
    Frames,
    Parked,
    RuntimeClient,
    RuntimeTimeout,
    RuntimeUnavailable,
)
from asya_sidecar.tracing import continue_trace
from asya_sidecar.waiting import first_of
from asya_transports import (
    Admin,
    Delivery,
    MessageTooLarge,
    QueueNotFound,
    Receiver,
    Transport,
    TransportError,
)

log = logging.getLogger("asya.sidecar")

RUNTIME_POLL_S = 0.5
# Pause before re-opening a subscription that failed, so a broken queue does not spin.
RESUBSCRIBE_DELAY_S = 2.0
# How long a call's results wait for its side events to be posted to the gateway (see
# Reporter.settled): one round trip when the gateway answers, this at most when it does not.
FLY_SETTLE_S = 0.5

Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Consumer:
    def __init__(
        self,
        *,
        config: SidecarConfig,
        transport: Transport,
        admin: Admin | None = None,
        runtime: RuntimeClient,
        metrics: SidecarMetrics,
        events: EventForwarder,
        reporter: Reporter | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.transport = transport
        # Only when the sidecar may create its own queue (ASYA_QUEUE_AUTOCREATE, development).
        self.admin = admin
        self.runtime = runtime
        self.metrics = metrics
        self.events = events
        # None unless ASYA_GATEWAY_URL is set (and never on crew actors): reporting.from_config.
        self.reporter = reporter
        self.clock = clock
        self.runtime_up = asyncio.Event()
        self._runtime_down = asyncio.Event()
        self._stopping = False
        self._problem = "starting"
        # The broker as the sidecar last found it: the open receiver's trouble (set while it
        # backs off) and the last send that failed (cleared by the next input settled).
        self._receiver: Receiver | None = None
        self._send_trouble = ""
        self._tasks: set[asyncio.Task[None]] = set()
        # Who keeps killing the runtime, and the gate that runs a suspect's call alone.
        self._crashes = CrashLedger()
        self._gate = CallGate()
        # Read when scraped, rather than counted up and down on every envelope.
        metrics.in_flight.set_function(lambda: len(self._tasks))

    # ------------------------------------------------------------------ health

    def health(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "stopping"
        if not self.runtime_up.is_set():
            return False, "runtime unavailable"
        if self._problem:
            return False, self._problem
        trouble = (self._receiver.trouble if self._receiver else None) or self._send_trouble
        if trouble:
            return False, f"broker unreachable: {trouble}"
        return True, "ok"

    def runtime_ready(self) -> None:
        self.runtime_up.set()
        self._runtime_down.clear()
        self.metrics.runtime_up.set(1)

    def _runtime_lost(self, reason: str) -> None:
        if self.runtime_up.is_set():
            log.warning("runtime unavailable, pausing consumption: %s", reason)
        self.runtime_up.clear()
        self._runtime_down.set()
        self.metrics.runtime_up.set(0)

    # --------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain; returns once every delivery is settled."""
        watcher = asyncio.create_task(self._watch_runtime(stop))
        try:
            while not stop.is_set():
                if not await first_of(self.runtime_up, stop):
                    break
                await self._consume(stop)
        finally:
            self._stopping = True
            watcher.cancel()
            await self._drain()

    async def _consume(self, stop: asyncio.Event) -> None:
        receiver = self.transport.receive(self.config.queue, prefetch=self.config.concurrency)
        self._receiver = receiver
        self._problem = ""
        # One task takes deliveries in a plain loop, rather than a task and a wait per
        # delivery; stopping or losing the runtime cancels it, and a receiver loses nothing
        # to a cancelled wait (the transport contract tests this).
        reader = asyncio.create_task(self._take_all(receiver))
        stop_wait = asyncio.create_task(stop.wait())
        down_wait = asyncio.create_task(self._runtime_down.wait())
        try:
            await asyncio.wait({reader, stop_wait, down_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (reader, stop_wait, down_wait):
                waiter.cancel()
            try:
                await asyncio.wait({reader})
            finally:
                await receiver.aclose()
        if reader.cancelled():
            return
        failure = reader.exception()
        if failure is None and not stop.is_set():
            failure = TransportError(f"the subscription to {self.config.queue} ended")
        if isinstance(failure, TransportError):
            await self._subscription_failed(failure, stop)
        elif failure is not None:
            raise failure

    async def _take_all(self, receiver: Receiver) -> None:
        """Start a _handle task for every delivery, until cancelled or the receiver fails."""
        tasks = self._tasks
        async for delivery in receiver:
            task = asyncio.create_task(self._handle(delivery))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _subscription_failed(self, exc: TransportError, stop: asyncio.Event) -> None:
        if isinstance(exc, QueueNotFound) and self.admin is not None:
            await self.admin.ensure_queue(self.config.queue)
            return
        self._problem = f"cannot receive from {self.config.queue}: {exc}"
        log.error("%s; retrying in %.0fs", self._problem, RESUBSCRIBE_DELAY_S)
        await first_of(stop, timeout=RESUBSCRIBE_DELAY_S)

    async def _watch_runtime(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.runtime_up.is_set():
                await first_of(self._runtime_down, stop)
                continue
            if await self.runtime.healthy():
                log.info("runtime is answering again; resuming")
                self.runtime_ready()
            else:
                await first_of(stop, timeout=RUNTIME_POLL_S)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info("draining %d envelope(s) in flight", len(self._tasks))
        _, unfinished = await asyncio.wait(self._tasks, timeout=self.config.shutdown_timeout)
        for task in unfinished:
            task.cancel()  # _handle requeues the delivery on cancellation
        if unfinished:
            log.warning("requeued %d envelope(s) still running at shutdown", len(unfinished))
            await asyncio.gather(*unfinished, return_exceptions=True)

    # ----------------------------------------------------------- one delivery

    async def _handle(self, delivery: Delivery) -> None:
        started = time.perf_counter()
        self.metrics.received.inc()
        heartbeat = self._keep_leased(delivery)
        try:
            decided = await self._decide(delivery)
            if decided is None:
                await _quietly(delivery.nack())
                self.metrics.processed("requeued")
                return
            decision, hop = decided
            try:
                await self._carry_out(decision)
            except MessageTooLarge as exc:
                # The broker's own encoding made a result too large (SQS base64s bodies that
                # are not plain text): treat it as the oversize result it is.
                decision, hop = self._oversize(delivery.body, exc), None
                await self._carry_out(decision)
            await delivery.ack()
            self._send_trouble = ""
            self.metrics.processed(decision.outcome)
            if decision.reason is not None:
                self.metrics.failed(decision.reason)
            if hop is not None and self.reporter is not None:
                # Only now that every output is confirmed: a `routed` report is never ahead
                # of the envelope it describes.
                at = envelope.timestamp(self.clock())
                self.reporter.report_all(outcome_reports(hop, decision, at=at))
        except TransportError as exc:
            self._send_trouble = str(exc)
            log.warning("could not send results, requeueing the input: %s", exc)
            await _quietly(delivery.nack())
            self.metrics.processed("requeued")
        except asyncio.CancelledError:
            await _quietly(delivery.nack())
            self.metrics.processed("requeued")
            raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            self.metrics.processing_seconds.observe(time.perf_counter() - started)

    async def _decide(self, delivery: Delivery) -> tuple[routing.Decision, Hop | None] | None:
        """The decision for one delivery and, when reporting, the hop to report its outcome
        under; None when the delivery must be requeued untouched."""
        body = delivery.body
        parsed = envelope.parse(body, actor=self.config.actor)
        if isinstance(parsed, Invalid):
            raw_headers = (parsed.fields or {}).get("headers")
            ctx = self._context(raw_headers if isinstance(raw_headers, dict) else {})
            log.warning(
                "unusable input sent to %s (%s): %s",
                names.SUMP,
                parsed.reason,
                parsed.message,
                extra={"reason": str(parsed.reason)},
            )
            return routing.reject(body, parsed, ctx), None
        ctx = self._context(parsed.headers)
        with envelope_context(envelope_id=parsed.id, trace_id=ctx.trace.trace_id):
            reporter, hop = self.reporter, None
            if reporter is not None:
                if routing.is_canceled(parsed, reporter.canceled):
                    log.info(
                        "the task was canceled; finishing without calling the handler",
                        extra={"reason": str(Reason.CANCELED)},
                    )
                    return routing.canceled(parsed, ctx), None
                hop = Hop(parsed, self.config.actor)
                received_at = envelope.timestamp(ctx.now)
                reporter.report(hop.report("received", received_at))
            if routing.past_deadline(parsed, ctx):
                log.info(
                    "deadline passed before the call; failing with Timeout",
                    extra={"reason": str(Reason.TIMEOUT)},
                )
                return routing.expired(parsed, ctx), hop
            if reporter is not None and hop is not None:
                reporter.report(hop.report("processing", received_at))
            called = time.perf_counter()

            flew = False

            def forward_fly(events: list[Any]) -> None:
                # As each batch arrives from the runtime, so that streamed tokens reach the
                # gateway while the handler still runs, and before this hop's outcome report.
                nonlocal flew
                self.events.forward(events, envelope_id=parsed.id)
                if reporter is not None and hop is not None:
                    reporter.report(hop.fly(events, envelope.timestamp(self.clock())), urgent=True)
                    flew = True

            alone = self._crashes.must_run_alone(parsed.id)
            try:
                async with self._gate.call(alone=alone):
                    result = await self.runtime.invoke(
                        body, timeout=self.config.actor_timeout, on_fly=forward_fly
                    )
                self._crashes.came_through(parsed.id)
            except RuntimeUnavailable as exc:
                failed = self._runtime_failed(
                    parsed, exc, delivery, alone=alone, body=body, ctx=ctx
                )
                return None if failed is None else (failed, hop)
            except RuntimeTimeout as exc:
                self._crashes.came_through(parsed.id)
                log.warning("%s", exc)
                details = wire.error_details(
                    routing.ACTOR_TIMEOUT,
                    str(exc),
                    mro=[routing.ACTOR_TIMEOUT, "TimeoutError", "OSError", "Exception"],
                )
                timed_out = routing.handler_failed(
                    parsed, details, body=body, reason=Reason.TIMEOUT, ctx=ctx
                )
                return timed_out, hop
            finally:
                self.metrics.runtime_seconds.observe(time.perf_counter() - called)
            if isinstance(result, Frames | Parked) and result.fly:
                forward_fly(result.fly)  # a runtime that does not stream sends them at the end
            if flew and reporter is not None:
                # The task's side events reach the gateway before anything the next actor or
                # x-sink reports: a follower gets the last tokens before the task ends. Bounded,
                # so a gateway that is down costs this hop at most FLY_SETTLE_S.
                await reporter.settled(FLY_SETTLE_S)
            decision = routing.decide(parsed, result, body=body, ctx=ctx)
            if decision.reason is not None:
                log.info(
                    "envelope %s: %s",
                    decision.outcome,
                    decision.reason,
                    extra={"reason": str(decision.reason)},
                )
            return decision, hop

    def _runtime_failed(
        self,
        parsed: envelope.Envelope,
        exc: RuntimeUnavailable,
        delivery: Delivery,
        *,
        alone: bool,
        body: bytes,
        ctx: routing.Context,
    ) -> routing.Decision | None:
        """None (requeue untouched) unless this envelope is the one that keeps killing the
        runtime (crash_ledger.py): then its failure, RuntimeCrashed."""
        self._runtime_lost(str(exc))
        if not exc.during_call:
            return None
        count = delivery.delivery_count
        verdict = self._crashes.died(parsed.id, alone=alone, delivery_count=count)
        if verdict is Verdict.RETRY:
            log.warning("the runtime died during this envelope; its next call runs alone")
            return None
        deaths = CRASH_ALONE_LIMIT if alone else 1
        log.error("the runtime died under this envelope; failing it as RuntimeCrashed")
        how = (
            f"{deaths} times while it ran alone"
            if alone
            else f"on its delivery {count} (the limit is {DELIVERY_BACKSTOP})"
        )
        details = wire.error_details(
            "RuntimeCrashed",
            f"the runtime stopped answering during this envelope {how} (last: {exc}); "
            "the handler may crash its process (out of memory?)",
        )
        return routing.handler_failed(
            parsed, details, body=body, reason=Reason.RUNTIME_CRASHED, ctx=ctx
        )

    def _oversize(self, body: bytes, exc: MessageTooLarge) -> routing.Decision:
        log.warning(
            "a result is too large for the broker (%s); sending the input to %s",
            exc,
            names.SUMP,
            extra={"reason": str(Reason.OVERSIZE_RESULT)},
        )
        parsed = envelope.parse(body, actor=self.config.actor)
        fields = parsed.fields if isinstance(parsed, Invalid) else dict(parsed.fields)
        invalid = Invalid(Reason.OVERSIZE_RESULT, str(exc), fields)
        return routing.reject(body, invalid, self._context({}))

    def _context(self, headers: Mapping[str, Any]) -> routing.Context:
        noise = os.urandom(40)  # one system call for the three ids, not three
        return routing.Context(
            actor=self.config.actor,
            now=self.clock(),
            trace=continue_trace(
                headers.get("traceparent"),
                new_trace_id=noise[:16].hex(),
                new_span_id=noise[16:24].hex(),
            ),
            new_id=str(uuid.UUID(bytes=noise[24:], version=4)),
            max_message_bytes=self.transport.max_message_bytes,
            crew_retry_delay=self.config.crew_retry_delay,
            resiliency=self.config.resiliency,
            rand=random.random(),
            namespace=self.config.namespace,
        )

    async def _carry_out(self, decision: routing.Decision) -> None:
        """Send every output; raises TransportError if any could not be sent anywhere."""
        if len(decision.outputs) == 1:
            await self._send(decision.outputs[0])
        elif decision.outputs:
            results = await asyncio.gather(
                *(self._send(output) for output in decision.outputs), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _send(self, output: routing.Output) -> None:
        try:
            queue = self.config.queue_of(output.actor)
            await self.transport.send(queue, output.body, delay=self._feasible(output.delay))
        except (QueueNotFound, names.InvalidName) as exc:
            if output.actor in names.CREW:
                raise  # without x-sink or x-sump there is nowhere safe to put it: requeue
            await self._send_unroutable(output, str(exc))
            return
        self.metrics.sent(output.actor)

    def _feasible(self, delay: float) -> float:
        longest = self.transport.max_delay_seconds
        feasible = feasible_delay(delay, longest)
        if feasible != delay:
            log.warning(
                "a delay of %gs is longer than the %s transport can hold a message; waiting %gs",
                delay,
                self.transport.name,
                longest,
            )
        return feasible

    async def _send_unroutable(self, output: routing.Output, detail: str) -> None:
        log.warning(
            "no queue for actor %r; sending to %s",
            output.actor,
            names.SUMP,
            extra={"destination": output.actor},
        )
        ctx = self._context({})
        sump = routing.unroutable(
            json.loads(output.body), destination=output.actor, detail=detail, ctx=ctx
        )
        await self.transport.send(self.config.sump_queue, sump.body)
        self.metrics.sent(names.SUMP)
        self.metrics.failed(Reason.UNKNOWN_ACTOR)

    def _keep_leased(self, delivery: Delivery) -> asyncio.Task[None] | None:
        lease = self.transport.lease_seconds
        if lease is None:
            return None
        return asyncio.create_task(_extend_periodically(delivery, lease))


def feasible_delay(delay: float, longest: float) -> float:
    """`delay`, shortened to the longest the broker can hold a message.

    A retry policy may ask for a longer wait than the broker allows; the send would then fail
    on every attempt and the input would loop until the broker dead-letters it. Waiting as
    long as the broker can is the closest honest answer (and it is logged).
    """
    return min(delay, longest)


async def _extend_periodically(delivery: Delivery, lease: float) -> None:
    # Renew at a third of the lease so that one slow renewal still leaves a margin.
    while True:
        await asyncio.sleep(lease / 3)
        try:
            await delivery.extend(lease)
        except TransportError as exc:
            log.warning("could not extend the lease of a delivery in progress: %s", exc)


async def _quietly(settle: Any) -> None:
    try:
        await settle
    except TransportError as exc:
        # The broker is gone; it will hand the message out again on its own.
        log.warning("could not settle a delivery: %s", exc)
