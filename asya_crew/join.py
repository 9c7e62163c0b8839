"""x-join: gathers the parts of a fan-out and sends one joined envelope on.

Runs inside the standard runtime (ASYA_HANDLER=asya_crew.join.Join.handle) next to an
ordinary sidecar. It receives, for each join (asya_shared.joins), the opener (the origin's
payload and onward route) and the N parts, in any order, any number of times; failed or
canceled parts come from x-sink. Each is written to the join store (asya_crew/joinstore:
PostgreSQL in a cluster, SQLite under `asya dev`), then parked: the sidecar acks it and
sends nothing.

Exactly one joined envelope per join, whatever the redeliveries and however many x-join
replicas: the message that completes a join claims it in the store (one claimer wins, for a
lease), the claimer publishes the joined envelope itself through the transport, then marks
the join done (its parts are deleted; a small tombstone keeps late duplicates from starting
it again, for ASYA_JOIN_KEEP_DONE). A claimer that dies before marking it done loses its
lease and another replica publishes again: the one case where the next actor can see the
joined envelope twice (with the same id), as with any broker redelivery.

A sweeper thread with its own event loop, started with the handler, claims the joins whose
deadline passed (a part that never came) and the ones whose claimer died, every
ASYA_JOIN_SWEEP_INTERVAL, so a join is decided even when no more messages arrive.

Settings (environment):

    ASYA_JOIN_STORE            sqlite:///path/join.db or postgresql://... (required)
    ASYA_TRANSPORT             the transport to publish joined envelopes on (required), with
                               that transport's own variables (as the sidecar has them)
    ASYA_NAMESPACE             the namespace of the queues (required)
    ASYA_JOIN_SWEEP_INTERVAL   default 5s
    ASYA_JOIN_LEASE            how long a claim is held before another replica may take the
                               join over; default 60s
    ASYA_JOIN_KEEP_DONE        how long tombstones of finished joins are kept; default 1h
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import Counter

import asya_transports as transports
from asya_crew import config, exposition, joining, reporting
from asya_crew.joinstore import Claimed, JoinStore, Part, open_join_store
from asya_shared import durations, joins, names, records, times
from asya_shared import env as variables

log = logging.getLogger("asya.crew.join")

JOINS = Counter(
    "asya_join_emitted_total",
    "Joined envelopes x-join sent on, by outcome (joined, partial, incomplete, oversize).",
    ["outcome"],
)

FAILED = "failed"
CANCELED = "canceled"
# Progress is reported to the gateway at about every hundredth part, and at the last.
REPORT_STEPS = 100
STOP_POLL_S = 0.25


class NotAPart(ValueError):
    """An envelope reached x-join without being part of a join."""


@dataclass(frozen=True)
class JoinSettings:
    store_url: str
    transport: str
    namespace: str
    sweep_interval: float
    lease: float
    keep_done: float


def settings_from(environ: Mapping[str, str]) -> JoinSettings:
    """x-join's settings; ConfigError naming every missing or malformed one."""
    problems = []
    values = {}
    for name in (variables.JOIN_STORE, variables.TRANSPORT, variables.NAMESPACE):
        values[name] = environ.get(name, "").strip()
        if not values[name]:
            problems.append(f"{name} is not set")
    durations_read = {}
    for name, default in (
        (variables.JOIN_SWEEP_INTERVAL, 5.0),
        (variables.JOIN_LEASE, 60.0),
        (variables.JOIN_KEEP_DONE, 3600.0),
    ):
        try:
            durations_read[name] = durations.positive_duration_from_env(
                environ, name, default, maximum=30 * 86400.0, limit="more than 0, at most 30d"
            )
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise config.ConfigError(
            "x-join: "
            + "; ".join(problems)
            + f" (x-join needs its store, e.g. {variables.JOIN_STORE}=sqlite:///var/asya/"
            "join.db or postgresql://..., and the transport its sidecar uses)"
        )
    return JoinSettings(
        store_url=values[variables.JOIN_STORE],
        transport=values[variables.TRANSPORT],
        namespace=values[variables.NAMESPACE],
        sweep_interval=durations_read[variables.JOIN_SWEEP_INTERVAL],
        lease=durations_read[variables.JOIN_LEASE],
        keep_done=durations_read[variables.JOIN_KEEP_DONE],
    )


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def micros(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def deadline_us(level: joins.Level) -> int:
    try:
        return micros(times.parse_rfc3339(level.deadline_at))
    except ValueError:
        raise joins.InvalidJoin(
            f"join of {level.origin!r}: deadline_at {level.deadline_at!r} is not RFC 3339"
        ) from None


class Emitter:
    """Publishes decided joins and marks them done: the same steps for the handler and the
    sweeper, each with its own store and transport (they run on different event loops)."""

    def __init__(self, settings: JoinSettings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.environ = environ
        self.store: JoinStore = open_join_store(settings.store_url)
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._transport: transports.Broker | None = None
        self._opened = False

    async def ready(self) -> JoinStore:
        if not self._opened:
            await self.store.open()
            self._opened = True
        return self.store

    async def transport(self) -> transports.Broker:
        if self._transport is None:
            transport = transports.create(self.settings.transport, self.environ)
            await transport.__aenter__()
            self._transport = transport
        return self._transport

    async def emit(self, claimed: Claimed) -> joining.Emission:
        now = now_utc()
        emission = joining.decide(claimed, now=now)
        transport = await self.transport()
        body = _encode(emission.envelope)
        if len(body) > transport.max_message_bytes:
            emission = joining.oversize(
                emission, size=len(body), limit=transport.max_message_bytes, now=now
            )
            body = _encode(emission.envelope)
        queue = names.queue_name(emission.namespace or self.settings.namespace, emission.actor)
        await transport.send(queue, body)
        await self.store.finish(claimed.origin, now_us=micros(now_utc()))
        JOINS.labels(outcome=_outcome(emission)).inc()
        log.info(
            "join of %s sent to %s: %d of %d parts%s",
            claimed.origin,
            emission.actor,
            emission.joined,
            claimed.count,
            f", missing {list(emission.missing)}" if emission.missing else "",
            extra={"envelope_id": claimed.origin},
        )
        return emission

    async def sweep(self) -> int:
        """Decide the joins past their deadline and the ones whose claimer died."""
        store = await self.ready()
        now = micros(now_utc())
        count = 0
        while True:
            claimed = await store.claim_expired(
                owner=self.owner, now_us=now, lease_s=self.settings.lease, limit=100
            )
            for item in claimed:
                await self.emit(item)
                count += 1
            if len(claimed) < 100:
                break
        await store.purge(before_us=now - int(self.settings.keep_done * 1_000_000))
        return count

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        if self._opened:
            await self.store.close()
            self._opened = False


def _encode(envelope: dict[str, Any]) -> bytes:
    # An envelope has a record's fields (and may have more): the same JSON encoding.
    return records.encode(cast(records.Record, envelope))


def _outcome(emission: joining.Emission) -> str:
    status = emission.envelope["status"]
    if status.get("reason") == joining.OVERSIZE:
        return "oversize"
    if emission.failed:
        return "incomplete"
    return "partial" if emission.missing else "joined"


class Join:
    """Built once by the runtime, with no arguments; settings come from the environment."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.settings = settings_from(env)
        self.emitter = Emitter(self.settings, env)
        self.reporter = reporting.from_environ(env, role=names.JOIN)
        self.sweeper: Sweeper | None = None
        if environ is None:  # built by the runtime in a crew pod, not by a test
            exposition.serve_from_handler(env)
            self.sweeper = Sweeper(Emitter(self.settings, env), self.settings.sweep_interval)
            self.sweeper.start()

    async def handle(self, payload: Any) -> AsyncGenerator[Any, Any]:
        fields: dict[str, Any] = {}
        for name in records.FIELDS:
            fields[name] = yield "GET", f".{name}"
        store = await self.emitter.ready()
        headers = fields["headers"] if isinstance(fields["headers"], dict) else {}
        opener = joins.opened(headers)
        if opener is not None:
            envelope = {**fields, "payload": payload}
            arrival = await store.add_opener(
                opener.origin,
                count=opener.count,
                deadline_us=deadline_us(opener),
                envelope=json.dumps(envelope, ensure_ascii=False),
            )
            origin = opener.origin
        else:
            level = _innermost(fields)
            origin = level.origin
            status = fields["status"] if isinstance(fields["status"], dict) else {}
            if status.get("phase") == CANCELED:
                await store.cancel(origin, now_us=micros(now_utc()))
                yield "PARK", f"join of {origin} canceled"
                return
            arrival = await store.add_part(
                origin,
                count=level.count,
                deadline_us=deadline_us(level),
                index=level.index,
                part=_part(status, payload),
            )
            if not arrival.done:
                self._report_progress(origin, fields, arrival.arrived, arrival.count)
        if not arrival.done and arrival.has_opener and arrival.arrived >= arrival.count:
            now = micros(now_utc())
            claimed = await store.claim_complete(
                origin, owner=self.emitter.owner, now_us=now, lease_s=self.settings.lease
            )
            if claimed is not None:
                await self.emitter.emit(claimed)
        yield "PARK", f"held by the join of {origin}"

    def _report_progress(
        self, origin: str, fields: Mapping[str, Any], done: int, total: int
    ) -> None:
        if self.reporter is None:
            return
        step = max(1, total // REPORT_STEPS)
        if done % step and done != total:
            return
        route = fields["route"]
        if not isinstance(route, dict):
            return
        self.reporter.report(
            {
                "id": origin,
                "parent_id": None,
                "actor": names.JOIN,
                "event": "joining",
                "route": {
                    "prev": list(route.get("prev") or []),
                    "curr": names.JOIN,
                    "next": list(route.get("next") or []),
                },
                "attempt": 1,
                "at": reporting.now_rfc3339(),
                "progress": {"done": done, "total": total},
            }
        )


def _innermost(fields: Mapping[str, Any]) -> joins.Level:
    headers = fields["headers"] if isinstance(fields["headers"], dict) else {}
    found = joins.levels(headers)
    if not found:
        route = fields.get("route")
        raise NotAPart(
            f"envelope {fields.get('id')!r} reached x-join but is not part of a join (no "
            f"{joins.PART_HEADER} header; route {route}). Put x-join after a step that "
            "returns a list, and before the step that takes the joined results"
        )
    return found[-1]


def _part(status: Mapping[str, Any], payload: Any) -> Part:
    if status.get("phase") == FAILED:
        failure = {
            "reason": status.get("reason"),
            "error": status.get("error"),
            "actor": status.get("actor"),
        }
        return Part(ok=False, data=json.dumps(failure, ensure_ascii=False))
    return Part(ok=True, data=json.dumps(payload, ensure_ascii=False))


class Sweeper:
    """The sweep loop on a thread of its own with its own event loop: the runtime's loop
    only runs handlers, and a restarted x-join must decide expired joins even when no
    message ever arrives again."""

    def __init__(self, emitter: Emitter, interval: float) -> None:
        self.emitter = emitter
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="asya-join-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _pause(self) -> None:
        """Wait out the interval, a little at a time so a stop is seen soon. Not on an
        executor thread: the interpreter waits for those at exit, a daemon thread it does
        not, so a runtime told to stop exits at once."""
        waited = 0.0
        while waited < self.interval and not self._stop.is_set():
            step = min(STOP_POLL_S, self.interval - waited)
            await asyncio.sleep(step)
            waited += step

    async def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self.emitter.sweep()
                except Exception as exc:  # the next sweep tries again; say why it failed
                    log.warning("x-join sweep failed (next try in %.0fs): %s", self.interval, exc)
                await self._pause()
        finally:
            await self.emitter.close()
