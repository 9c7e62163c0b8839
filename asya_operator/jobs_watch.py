"""The job watcher: continues an envelope that asya_callers.jobs.Launch parked in a batch job.

kopf watches the four job kinds (asya_shared.jobs.KINDS), only objects labelled
`asya.sh/launched-by`. On every event, and every DEADLINE_CHECK_S seconds for each job seen
and not yet continued (`sweep`), it reads the job (job_state.py), decides (continuation.py)
and, when there is something to send, does it exactly once:

    1. claim     merge-patch the job's annotation asya.sh/continuation to
                 "claimed:<holder>@<time>", with the job's resourceVersion as a
                 precondition; the API server refuses the patch (409) if anyone wrote the
                 job since we read it
    2. send      put the continuation on the next actor's queue (or x-sink's), through the
                 launching actor's transport; returns once the broker confirmed it
    3. mark      patch the annotation to "sent"; a job marked sent is never looked at again
    4. delete    only when the envelope's deadline passed while the job ran

Two watchers (an old and a new operator pod) never both send: only one claim succeeds, and a
claim another process made less than CLAIM_GRACE_S ago is left alone. An older one was left
by a process that died; it is taken over by claiming again, with the same precondition. A
send that went out but could not be marked is remembered here and only marked later, never
sent again. The one window: a crash after the broker confirmed step 2 and before step 3
lands sends the continuation again after the restart (once the claim is stale), with the
same envelope id: the at-least-once every hop has; the gateway's reports are idempotent by
id. docs/jobs.md says so.

Why the operator rather than a crew actor: it already watches the cluster with kopf, has
the transports' configuration and credentials, and runs as one replica, which is what the
claim assumes. Its import line lives in handlers.py; this module imports nothing from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import kopf

import asya_transports as transports
from asya_operator import continuation, job_state, kube
from asya_operator.config import OperatorConfig, TransportConfig
from asya_operator.queues import BrokerUnavailable, QueueAdmin, QueueAdminError
from asya_shared import jobs, names

# How often a job not yet continued is looked at again: the envelope's deadline, and a send
# that failed (broker down, actor's transport unknown) are retried on this beat.
DEADLINE_CHECK_S = 15.0
# A claim another process made this recently may be a send in flight (two operator pods for
# a moment); older, its holder died. Far longer than a send takes (bounded by the transport's
# 20 s timeout), short enough that a crash delays a continuation by about a minute.
CLAIM_GRACE_S = 60.0
MEMO_KEY = "asya-jobs"

_log = logging.getLogger(__name__)


class SendFailed(Exception):
    """The continuation could not be sent now; the claim was released for a later try."""


class OperatorState(Protocol):
    """What this module needs of handlers.State (kept in kopf's memo under "asya")."""

    config: OperatorConfig

    def kube(self) -> kube.Client: ...


class Sender(QueueAdmin):
    """The operator's queue administration, plus sending one message."""

    async def send(self, name: str, transport: TransportConfig, queue: str, body: bytes) -> None:
        try:
            names.check_queue_name(queue, transport.type)
        except names.InvalidName as exc:
            raise QueueAdminError(str(exc)) from exc

        async def send_one(opened: transports.Admin) -> None:
            assert isinstance(opened, transports.Broker)  # every broker module is both halves
            try:
                await opened.send(queue, body)
            except transports.TransportUnavailable:
                raise
            except (transports.TransportError, ValueError) as exc:
                raise QueueAdminError(str(exc)) from exc

        await self._run(name, transport, "send the continuation", send_one)


class Claim(StrEnum):
    """Where a job's continuation stands, read from its annotation (see `claim_of`)."""

    FREE = "free"  # nobody has claimed it (or a failed send released the claim)
    SENT = "sent"  # done, for good
    OURS = "ours"  # claimed by this process
    FRESH = "fresh"  # claimed by another process within CLAIM_GRACE_S: it may be sending now
    STALE = "stale"  # claimed by another process longer ago: it died; take it over


def claim_value(holder: str, now: datetime.datetime) -> str:
    return f"{jobs.CLAIMED_PREFIX}{holder}@{_stamp(now)}"


def claim_of(annotation: str | None, *, holder: str, now: datetime.datetime) -> Claim:
    """Pure: the state of a job's claim annotation, for the watcher `holder` at `now`."""
    if not annotation:
        return Claim.FREE
    if annotation == jobs.CONTINUATION_SENT:
        return Claim.SENT
    if not annotation.startswith(jobs.CLAIMED_PREFIX):
        return Claim.FREE  # not ours to read: claim over it, with the precondition
    claimer, _, since = annotation[len(jobs.CLAIMED_PREFIX) :].rpartition("@")
    if claimer == holder:
        return Claim.OURS
    try:
        at = datetime.datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return Claim.STALE
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.UTC)
    return Claim.FRESH if (now - at).total_seconds() < CLAIM_GRACE_S else Claim.STALE


@dataclass
class Watcher:
    config: OperatorConfig
    client: kube.Client
    sender: Sender
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}/{uuid.uuid4().hex[:8]}")
    inflight: set[str] = field(default_factory=set)
    # Jobs seen and not yet continued, for the periodic sweep: uid -> (kind, namespace, name).
    pending: dict[str, tuple[jobs.JobKind, str, str]] = field(default_factory=dict)
    # Jobs whose continuation this process sent but could not mark yet: mark, never resend.
    delivered: set[str] = field(default_factory=set)

    def forget(self, job: Mapping[str, Any]) -> None:
        uid = _uid(job.get("metadata") or {})
        self.pending.pop(uid, None)
        self.delivered.discard(uid)

    async def advance(
        self, kind: jobs.JobKind, job: Mapping[str, Any], *, now: datetime.datetime
    ) -> str:
        """Look at one job and act; returns what happened (for logs and tests)."""
        metadata = job.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        uid = _uid(metadata)
        claim = claim_of(annotations.get(jobs.ANNOTATION_CONTINUATION), holder=self.holder, now=now)
        if claim == Claim.SENT:
            self.pending.pop(uid, None)
            self.delivered.discard(uid)
            return "done"
        self.pending[uid] = (kind, str(metadata.get("namespace")), str(metadata.get("name")))
        if uid in self.inflight:
            return "busy"  # our own claim's event, while we still send
        if uid in self.delivered:
            return await self._mark(kind, metadata, delete=False)
        if claim == Claim.FRESH:
            return "claimed-elsewhere"  # looked at again by the sweep; taken over once stale
        try:
            parked = continuation.parse_parked(annotations.get(jobs.ANNOTATION_ENVELOPE))
        except continuation.ParkedEnvelopeError as exc:
            _log.error("job %s: %s; it cannot be continued", _where(kind, metadata), exc)
            self.pending.pop(uid, None)
            return "unreadable"
        decision = continuation.decide(
            parked, job_state.read(kind, job), job=_identity(kind, metadata), now=now
        )
        if isinstance(decision, continuation.Wait):
            if continuation.deadline_of(parked) is None:
                # Only its own events can move it on: the sweep need not read it meanwhile.
                self.pending.pop(uid, None)
            return "waiting"
        self.inflight.add(uid)
        try:
            return await self._carry_out(kind, metadata, decision, now=now)
        finally:
            self.inflight.discard(uid)

    async def _carry_out(
        self,
        kind: jobs.JobKind,
        metadata: Mapping[str, Any],
        decision: continuation.Send,
        *,
        now: datetime.datetime,
    ) -> str:
        resource = _resource(kind)
        namespace, name = str(metadata["namespace"]), str(metadata["name"])
        claim = {
            "metadata": {
                "resourceVersion": metadata.get("resourceVersion"),
                "annotations": {jobs.ANNOTATION_CONTINUATION: claim_value(self.holder, now)},
            }
        }
        try:
            await self.client.patch(resource, namespace, name, claim)
        except kube.Conflict:
            return "conflict"  # written since we read it: the next event brings it fresh
        except kube.NotFound:
            self.pending.pop(_uid(metadata), None)
            return "gone"
        try:
            await self._send(namespace, metadata, decision)
        except (SendFailed, BrokerUnavailable, QueueAdminError, kube.ApiError) as exc:
            _log.warning(
                "job %s: cannot send the continuation to %r now (%s); trying again in %gs",
                _where(kind, metadata), decision.actor, exc, DEADLINE_CHECK_S,
            )  # fmt: skip
            release = {"metadata": {"annotations": {jobs.ANNOTATION_CONTINUATION: None}}}
            try:
                await self.client.patch(resource, namespace, name, release)
            except kube.ApiError as release_error:
                # The claim stays ours; the next look at this job claims it again.
                _log.warning("job %s: cannot release the claim: %s", name, release_error)
            return "retry"
        self.delivered.add(_uid(metadata))
        _log.info(
            "job %s: envelope %s continued to %r",
            _where(kind, metadata), decision.envelope.get("id"), decision.actor,
        )  # fmt: skip
        return await self._mark(kind, metadata, delete=decision.delete_job)

    async def _mark(self, kind: jobs.JobKind, metadata: Mapping[str, Any], *, delete: bool) -> str:
        """Record that the continuation went out; on failure the sweep marks it later (the
        uid stays in `delivered`, so it is never sent twice from this process)."""
        resource = _resource(kind)
        namespace, name, uid = str(metadata["namespace"]), str(metadata["name"]), _uid(metadata)
        done = {"metadata": {"annotations": {jobs.ANNOTATION_CONTINUATION: jobs.CONTINUATION_SENT}}}
        try:
            await self.client.patch(resource, namespace, name, done)
        except kube.NotFound:
            self.forget({"metadata": metadata})
            return "sent"
        except kube.ApiError as exc:
            _log.warning("job %s: sent, but cannot mark it so yet: %s", name, exc)
            return "sent-unmarked"
        self.pending.pop(uid, None)
        self.delivered.discard(uid)
        if delete:
            try:
                await self.client.delete(resource, namespace, name)
            except kube.ApiError as exc:
                _log.warning(
                    "job %s: past its envelope's deadline, cannot delete it: %s", name, exc
                )
        return "sent"

    async def _send(
        self, namespace: str, metadata: Mapping[str, Any], decision: continuation.Send
    ) -> None:
        launcher = str((metadata.get("labels") or {}).get(jobs.LABEL_LAUNCHED_BY) or "")
        requested: str | None = None
        try:
            actor = await self.client.get(kube.ASYNCACTORS, namespace, launcher)
            requested = (actor.get("spec") or {}).get("transport")
        except kube.NotFound:
            pass  # the launching actor is gone: its pipeline's default transport still serves
        transport_name = self.config.transport_name(requested)
        if transport_name is None or transport_name not in self.config.transports:
            raise SendFailed(
                f"transport {transport_name!r} of actor {launcher!r} is not configured in the "
                "operator"
            )
        transport = self.config.transports[transport_name]
        if decision.actor in names.CREW:
            queue_namespace = self.config.crew_namespace or namespace
        else:
            queue_namespace = namespace
        queue = names.queue_name(queue_namespace, decision.actor)
        body = json.dumps(decision.envelope, separators=(",", ":"), ensure_ascii=False).encode()
        await self.sender.send(transport_name, transport, queue, body)


def _stamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _uid(metadata: Mapping[str, Any]) -> str:
    return str(metadata.get("uid") or f"{metadata.get('namespace')}/{metadata.get('name')}")


def _resource(kind: jobs.JobKind) -> kube.Resource:
    return kube.Resource(kind.group, kind.version, kind.plural, kind.kind)


def _identity(kind: jobs.JobKind, metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
    }


def _where(kind: jobs.JobKind, metadata: Mapping[str, Any]) -> str:
    return f"{kind.kind}.{kind.group} {metadata.get('namespace')}/{metadata.get('name')}"


# -- kopf ---------------------------------------------------------------------------------


@dataclass
class _Slot:
    """Held in the operator-wide memo: per-object memos are copies, the slot is shared."""

    watcher: Watcher | None = None
    sweeper: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def watcher_of(memo: kopf.Memo) -> Watcher:
    slot = memo.get(MEMO_KEY)
    state = memo.get("asya")
    if not isinstance(slot, _Slot) or state is None:
        raise kopf.TemporaryError("the operator has not finished starting", delay=5)
    async with slot.lock:
        if slot.watcher is None:
            operator: OperatorState = state
            client = operator.kube()
            slot.watcher = Watcher(operator.config, client, Sender(operator.config, client))
            slot.sweeper = asyncio.create_task(sweep(slot.watcher), name="asya-jobs-sweep")
        return slot.watcher


async def sweep(watcher: Watcher, interval: float = DEADLINE_CHECK_S) -> None:
    """Every `interval`: read again each job that needs looking at without an event (a running
    job whose envelope has a deadline, a send to retry, a claim to wait out), and advance it.

    It reads only jobs the watch has shown (after a restart, kopf's initial listing shows
    them all again), one GET each."""
    while True:
        await asyncio.sleep(interval)
        for uid, (kind, namespace, name) in list(watcher.pending.items()):
            try:
                job = await watcher.client.get(_resource(kind), namespace, name)
                await watcher.advance(kind, job, now=datetime.datetime.now(datetime.UTC))
            except kube.NotFound:
                watcher.pending.pop(uid, None)
            except Exception:  # one job's trouble must not stop the others' deadlines
                _log.exception("job %s/%s: the periodic check failed", namespace, name)


@kopf.on.startup()
async def jobs_startup(memo: kopf.Memo, **_: Any) -> None:
    memo[MEMO_KEY] = _Slot()


@kopf.on.cleanup()
async def jobs_cleanup(memo: kopf.Memo, **_: Any) -> None:
    slot = memo.get(MEMO_KEY)
    if not isinstance(slot, _Slot):
        return
    if slot.sweeper is not None:
        slot.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slot.sweeper
    if slot.watcher is not None:
        await slot.watcher.sender.aclose()


def _register(kind: jobs.JobKind) -> None:
    # An event handler only: kopf's timers and daemons would put a finalizer on the user's
    # jobs, and its change handlers would write their progress into them.
    @kopf.on.event(
        kind.group, kind.version, kind.plural,
        id=f"asya-{kind.plural}-{kind.group}", labels={jobs.LABEL_LAUNCHED_BY: kopf.PRESENT},
    )  # fmt: skip
    async def on_job(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
        watcher = await watcher_of(memo)
        if type == "DELETED":
            watcher.forget(body)
            return
        await watcher.advance(kind, body, now=datetime.datetime.now(datetime.UTC))


for _kind in jobs.KINDS:
    _register(_kind)
