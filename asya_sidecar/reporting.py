"""Status reports to the gateway, and the cancellations learned from its answers.

When ASYA_GATEWAY_URL is set, an ordinary actor's sidecar tells the gateway's internal port
what happens to each envelope (asya_shared.wire.HopReport): `received` when it takes one,
`processing` just before the handler is called, then `routed` for each output sent on (with
the route as sent), `retrying` when the actor's policy retries it, and `fly` with the
handler's side events. Terminal reports come from the crew (x-sink, x-sump), never from
here. Crew sidecars report nothing. Without ASYA_GATEWAY_URL there is no Reporter at all.

Reporting never delays, fails or loses an envelope:

- `Reporter.report` is a plain append to an in-memory queue; one background task posts
  `{"reports": [...], "canceled_cursor": n}` in batches of up to BATCH_SIZE every
  `interval` (ASYA_GATEWAY_REPORT_INTERVAL, 1 s), sooner when a full batch is waiting or an
  urgent report (a side event: streamed tokens are live) came. After a failed post the next
  one waits the interval, urgent or not. The consumer waits (`settled`, bounded by
  consumer.FLY_SETTLE_S) for a call's side events to be posted before it routes the call's
  results on, so they reach the gateway before the task's next report from elsewhere.
- The queue holds at most MAX_PENDING reports. Beyond that the oldest are dropped and
  counted: every report a sidecar makes is non-terminal, so what is lost is freshness, and
  the terminal status still arrives from x-sink. A batch the gateway could not take goes back
  to the front of the queue as far as there is room, and is posted again next time.
- A gateway that is down costs one warning per minute in the log, nothing else.

The batch is posted every interval even when it is empty, whether or not envelopes came
lately: the answer carries the ids of tasks canceled since our cursor, and a sidecar that
has been idle must know them before its next envelope arrives. Idle, that is one small
request per interval.

Cancellation: the ids from the answers go into a CancelSet (kept CANCEL_TTL_S, at most
CANCEL_LIMIT ids); before calling the handler the consumer asks routing.is_canceled, a dict
lookup, so the check costs no request per hop. A cancellation takes effect within about one
interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from asya_shared import wire
from asya_sidecar import codec
from asya_sidecar.config import SidecarConfig
from asya_sidecar.envelope import Envelope
from asya_sidecar.metrics import SidecarMetrics
from asya_sidecar.routing import Decision, Outcome

__all__ = [
    "BATCH_SIZE",
    "CANCEL_LIMIT",
    "CANCEL_TTL_S",
    "MAX_PENDING",
    "PATH",
    "CancelSet",
    "Hop",
    "ReportQueue",
    "Reporter",
    "encode",
    "from_config",
    "outcome_reports",
    "parse_answer",
]

log = logging.getLogger("asya.sidecar.reporting")

PATH = "/internal/v1/reports"
MAX_PENDING = 10_000
BATCH_SIZE = 500
# Short: a gateway that hangs must not hold reports back for long (they wait in the queue).
POST_TIMEOUT_S = 5.0
# At shutdown, how long the last batch may take before it is given up.
CLOSE_TIMEOUT_S = 2.0
CANCEL_TTL_S = 3600.0
CANCEL_LIMIT = 100_000
FAILURE_LOG_EVERY_S = 60.0
# A gateway that starts a few seconds after the sidecars (every `asya dev`, every rollout) is
# not worth a warning; one that stays away this long is.
FAILURE_GRACE_S = 10.0

Clock = Callable[[], float]


# ------------------------------------------------------------------------ pure parts


class ReportQueue:
    """The reports waiting to be posted, oldest first, at most `limit` of them."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit = limit
        self._items: deque[wire.HopReport] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, report: wire.HopReport) -> int:
        """Queue `report`; returns how many older reports were dropped to make room."""
        items = self._items
        items.append(report)
        if len(items) <= self.limit:
            return 0
        items.popleft()
        return 1

    def take(self, count: int) -> list[wire.HopReport]:
        """Up to `count` of the oldest reports, removed from the queue."""
        items = self._items
        if len(items) <= count:
            batch = list(items)
            items.clear()
            return batch
        return [items.popleft() for _ in range(count)]

    def put_back(self, batch: list[wire.HopReport]) -> int:
        """Return a batch that could not be posted to the front, in order, as far as there is
        room (reports that came in meanwhile keep theirs); returns how many were dropped."""
        room = max(0, self.limit - len(self._items))
        kept = batch[len(batch) - room :] if room < len(batch) else batch
        self._items.extendleft(reversed(kept))
        return len(batch) - len(kept)


class CancelSet:
    """Ids of canceled tasks, each kept `ttl` seconds from when it was learned, at most
    `limit` of them (the oldest go first). Membership is a dict lookup."""

    def __init__(
        self, *, ttl: float = CANCEL_TTL_S, limit: int = CANCEL_LIMIT, clock: Clock = time.monotonic
    ) -> None:
        self.ttl, self.limit, self.clock = ttl, limit, clock
        self._expiry: dict[str, float] = {}  # insertion order is expiry order

    def __contains__(self, envelope_id: object) -> bool:
        return envelope_id in self._expiry

    def __len__(self) -> int:
        return len(self._expiry)

    def __iter__(self) -> Iterator[str]:
        return iter(self._expiry)

    def add(self, ids: Iterable[str]) -> None:
        now = self.clock()
        expiry = self._expiry
        for envelope_id in ids:
            expiry.pop(envelope_id, None)  # learned again: kept from now on
            expiry[envelope_id] = now + self.ttl
        while len(expiry) > self.limit:
            del expiry[next(iter(expiry))]
        self.prune()

    def prune(self) -> None:
        """Forget the ids whose time is up."""
        now = self.clock()
        expiry = self._expiry
        while expiry:
            oldest = next(iter(expiry))
            if expiry[oldest] > now:
                break
            del expiry[oldest]


class Hop:
    """The reports about one envelope at this actor: built only when reporting is on.

    `route` is the route as received, turned into its wire form once for all the reports of
    the visit.
    """

    __slots__ = ("actor", "attempt", "id", "parent_id", "redriven_at", "route")

    def __init__(self, env: Envelope, actor: str) -> None:
        self.id = env.id
        self.parent_id: str | None = env.fields.get("parent_id")
        self.actor = actor
        self.route = env.route.to_json()
        self.attempt = env.attempt
        self.redriven_at = wire.redriven_at(env.headers)

    def report(self, event: str, at: str) -> wire.HopReport:
        report: wire.HopReport = {
            "id": self.id,
            "parent_id": self.parent_id,
            "actor": self.actor,
            "event": event,
            "route": self.route,
            "attempt": self.attempt,
            "at": at,
        }
        if self.redriven_at is not None:
            report["redriven_at"] = self.redriven_at
        return report

    def fly(self, events: list[Any], at: str) -> wire.HopReport:
        report = self.report("fly", at)
        report["events"] = events
        return report


def outcome_reports(hop: Hop, decision: Decision, *, at: str) -> list[wire.HopReport]:
    """What to report once the decision's outputs are sent.

    - routed / succeeded: one `routed` per output, about the envelope as sent (its own id,
      so fan-out children are reported under theirs, and the route as sent); a policy's
      thenRoute carries its reason and error.
    - retried: `retrying` with the reason and error, on the attempt that failed.
    - parked: `paused`: the envelope waits outside the pipeline (a batch job) until
      whoever holds it sends it on.
    - failed, canceled, sumped: nothing; x-sink or x-sump reports how it ended.
    """
    outcome = decision.outcome
    if outcome is Outcome.PARKED:
        return [hop.report("paused", at)]
    if outcome is Outcome.RETRIED:
        retrying = hop.report("retrying", at)
        status = _status_of(decision.outputs[0].fields)
        retrying["reason"] = status.get("reason")
        retrying["error"] = status.get("error")
        return [retrying]
    if outcome is not Outcome.ROUTED and outcome is not Outcome.SUCCEEDED:
        return []
    reports: list[wire.HopReport] = []
    for output in decision.outputs:
        fields = output.fields
        if fields is None:
            continue
        status = _status_of(fields)
        report: wire.HopReport = {
            "id": fields["id"],
            "parent_id": fields.get("parent_id"),
            "actor": hop.actor,
            "event": "routed",
            "route": fields["route"],
            "attempt": hop.attempt,
            "at": at,
        }
        if status.get("reason") is not None:
            report["reason"] = status["reason"]
            report["error"] = status.get("error")
        reports.append(report)
    return reports


def _status_of(fields: Any) -> dict[str, Any]:
    status = fields.get("status") if isinstance(fields, dict) else None
    return status if isinstance(status, dict) else {}


def encode(value: Any) -> bytes:
    """JSON for a batch: the hot-path codec, or the standard library with every character
    escaped and unknown types as text when a report holds what UTF-8 JSON cannot (a lone
    surrogate in a side event, say), so one odd report never stops reporting."""
    try:
        return codec.dumps(value)
    except ValueError:  # UnicodeEncodeError is one
        return json.dumps(value, default=str).encode("ascii")


def parse_answer(body: bytes) -> tuple[list[str], int | None]:
    """(canceled ids, new cursor) from the gateway's answer; what is malformed is ignored."""
    try:
        answer = codec.loads(body)
    except ValueError:
        return [], None
    if not isinstance(answer, dict):
        return [], None
    raw_ids = answer.get("canceled")
    ids = [i for i in raw_ids if isinstance(i, str)] if isinstance(raw_ids, list) else []
    cursor = answer.get("canceled_cursor")
    if isinstance(cursor, bool) or not isinstance(cursor, int):
        cursor = None
    return ids, cursor


# --------------------------------------------------------------------------- the I/O


class Reporter:
    """Queues reports and posts them to the gateway from one background task (`run`)."""

    def __init__(
        self,
        *,
        url: str,
        actor: str,
        metrics: SidecarMetrics,
        interval: float = 1.0,
        max_pending: int = MAX_PENDING,
        batch_size: int = BATCH_SIZE,
        timeout: float = POST_TIMEOUT_S,
        failure_grace: float = FAILURE_GRACE_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/") + PATH
        self.actor = actor
        self.metrics = metrics
        self.interval = interval
        self.batch_size = batch_size
        self.timeout = timeout
        self.failure_grace = failure_grace
        self.clock = clock
        self.queue = ReportQueue(max_pending)
        self.canceled = CancelSet(clock=clock)
        self.cursor = 0
        self._full = asyncio.Event()
        # Reports ever queued, and of those, how many are posted or dropped (gone either
        # way): `settled()` waits for the second to reach the first.
        self._queued = 0
        self._gone = 0
        self._progress = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._failing_since: float | None = None
        self._last_warning = -FAILURE_LOG_EVERY_S
        self._warned_since_failing = False
        self._dropped_since_warning = 0

    # -- the hot path: plain appends, no await

    def report(self, report: wire.HopReport, *, urgent: bool = False) -> None:
        """Queue `report`; `urgent` posts it now rather than at the next interval (side
        events: a streamed token is worth nothing a second late)."""
        self._queued += 1
        dropped = self.queue.append(report)
        if dropped:
            self._dropped(dropped)
            self._gone += dropped
        if (urgent or len(self.queue) >= self.batch_size) and not self._full.is_set():
            self._full.set()

    async def settled(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until every report queued so far is posted or
        dropped; whether they were. The consumer waits so after a call's side events, so
        that they reach the gateway before the next actor (or x-sink) reports the task."""
        mark = self._queued
        self._full.set()
        try:
            async with asyncio.timeout(timeout):
                while self._gone < mark:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    def report_all(self, reports: Iterable[wire.HopReport]) -> None:
        for report in reports:
            self.report(report)

    # -- the background task

    async def run(self) -> None:
        """Post at once (to learn the cancellations so far before the first envelope), then
        a batch every interval, sooner when one is full, until cancelled."""
        while True:
            self._full.clear()
            self.canceled.prune()
            posted = False
            try:
                posted = await self.flush()
            except Exception:
                # A bug here must cost reports, never the sidecar's loop or its envelopes.
                log.exception("posting status reports failed unexpectedly; carrying on")
            if not posted:
                # A gateway that failed is asked again after an interval, however urgent
                # the reports that come meanwhile: no storm of posts while it is down.
                await asyncio.sleep(self.interval)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.interval)

    async def flush(self) -> bool:
        """Post what is queued (an empty batch too: its answer says what was canceled), in
        batches, until less than a full batch is left or a post fails; False if one failed."""
        while True:
            batch = self.queue.take(self.batch_size)
            try:
                posted = await self._post(batch)
            except asyncio.CancelledError:
                self.queue.put_back(batch)  # stopping: close() may still send it
                raise
            if not posted:
                dropped = self.queue.put_back(batch)
                if dropped:
                    self._dropped(dropped)
                    self._gone += dropped
                self._progress.set()
                return False
            self._gone += len(batch)
            self._progress.set()
            if len(self.queue) < self.batch_size:
                return True

    async def close(self) -> None:
        """One last post of what is queued (bounded in time), then the connection closes."""
        try:
            if len(self.queue):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.flush(), CLOSE_TIMEOUT_S)
            if len(self.queue):
                log.warning(
                    "%d status report(s) not sent to the gateway at shutdown", len(self.queue)
                )
        finally:
            if self._client is not None:
                await self._client.aclose()

    async def _post(self, batch: list[wire.HopReport]) -> bool:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                headers={"content-type": "application/json", "x-asya-actor": self.actor},
            )
        body = encode({"reports": batch, "canceled_cursor": self.cursor})
        try:
            response = await self._client.post(self.url, content=body)
        except httpx.HTTPError as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        if response.status_code >= 500:
            return self._failed(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code != 200:
            # The gateway refused this batch (400: malformed): sending it again would be
            # refused again, so it is dropped, and said so.
            log.warning(
                "the gateway at %s refused %d status report(s) with HTTP %d: %s",
                self.url, len(batch), response.status_code, response.text[:500],
            )  # fmt: skip
            self.metrics.report_batches_failed.inc()
            self.metrics.reports_dropped.inc(len(batch))
            return True
        ids, cursor = parse_answer(response.content)
        if ids:
            self.canceled.add(ids)
            log.info("the gateway canceled %d task(s)", len(ids))
        if cursor is not None:
            self.cursor = cursor
        self.metrics.report_batches_sent.inc()
        if self._failing_since is not None and self._warned_since_failing:
            log.info(
                "reporting to the gateway again after %.0fs",
                self.clock() - self._failing_since,
            )
        self._failing_since = None
        self._warned_since_failing = False
        return True

    def _failed(self, problem: str) -> bool:
        self.metrics.report_batches_failed.inc()
        now = self.clock()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since < self.failure_grace:
            return False
        if now - self._last_warning >= FAILURE_LOG_EVERY_S:
            self._last_warning = now
            self._warned_since_failing = True
            log.warning(
                "cannot post status reports to the gateway at %s (%s); %d waiting, %d dropped "
                "since the last warning. Envelopes are not affected; check that the gateway "
                "runs and that %s is its internal URL (next warning in %.0fs at most)",
                self.url, problem, len(self.queue), self._dropped_since_warning,
                "ASYA_GATEWAY_URL", FAILURE_LOG_EVERY_S,
            )  # fmt: skip
            self._dropped_since_warning = 0
        return False

    def _dropped(self, count: int) -> None:
        self.metrics.reports_dropped.inc(count)
        self._dropped_since_warning += count


def from_config(config: SidecarConfig, metrics: SidecarMetrics) -> Reporter | None:
    """The sidecar's reporter: None without a gateway URL, and for crew actors (x-sink and
    x-sump report the outcome from their handlers, and never skip a canceled envelope)."""
    if config.gateway_url is None or config.is_crew:
        return None
    return Reporter(
        url=config.gateway_url,
        actor=config.actor,
        metrics=metrics,
        interval=config.report_interval,
    )
