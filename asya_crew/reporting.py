"""Terminal status reports from the crew to the gateway (when ASYA_GATEWAY_URL is set).

x-sink reports how every envelope it records ended (`succeeded` with the result, `failed`
with the error, `canceled`); x-sump reports the failures that never reached x-sink (input a
sidecar could not parse, an output for an actor with no queue, ...). The shape is
asya_shared.wire.HopReport; the gateway's internal endpoint takes `{"reports": [...]}`.

A report never fails or delays the handler: `CrewReporter.report` is a plain append, and
one background task on the runtime's event loop posts what is queued at once, unless it
posted less than MIN_POST_GAP_S ago (so a lone task's result arrives at once, and under
load the reports gather into batches of up to BATCH_SIZE, at most 20 posts a second).
While the gateway is down, reports wait in memory (MAX_PENDING at most, then the oldest are
dropped and counted) and are posted again with a growing pause; the gateway can reconcile
what was dropped from the result store. A warning is logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client import Counter

from asya_shared import env, names, times, wire

__all__ = [
    "BATCH_SIZE",
    "MAX_PENDING",
    "PATH",
    "CrewReporter",
    "from_environ",
    "reached_sink",
    "terminal_report",
]

log = logging.getLogger("asya.crew.reporting")

PATH = "/internal/v1/reports"
MAX_PENDING = 10_000
BATCH_SIZE = 500
POST_TIMEOUT_S = 5.0
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 30.0
# At most one post per this gap: a post costs the crew's runtime a few milliseconds of CPU,
# so under load reports are gathered into fewer posts, while a lone report goes at once.
MIN_POST_GAP_S = 0.05
# At close, how long what is queued (and a post in flight) may take before it is cut short.
CLOSE_TIMEOUT_S = 2.0
FAILURE_LOG_EVERY_S = 60.0
# What a sidecar finishes an envelope with, and so what x-sink may report.
TERMINAL_PHASES = ("succeeded", "failed", "canceled")

# In the default registry, which the crew's metrics endpoint serves.
BATCHES = Counter(
    "asya_crew_report_batches_total",
    "Batches of terminal status reports posted to the gateway, by role and result.",
    ["role", "result"],
)
DROPPED = Counter(
    "asya_crew_reports_dropped_total",
    "Terminal status reports dropped: the gateway was unreachable and the buffer was full, "
    "or it refused a batch.",
    ["role"],
)


# ------------------------------------------------------------------------ pure parts


def terminal_report(
    record: Mapping[str, Any], *, actor: str, at: str, event: str | None = None
) -> wire.HopReport | None:
    """The report of how the recorded envelope ended, or None when there is nothing a
    gateway could use (no id, or a phase that is not an end: nothing to report).

    `event` defaults to the envelope's own phase; x-sump passes "failed".
    """
    envelope_id = record.get("id")
    if not isinstance(envelope_id, str) or not envelope_id:
        return None
    status = record.get("status")
    status = status if isinstance(status, dict) else {}
    event = event or status.get("phase")
    if event not in TERMINAL_PHASES:
        return None
    attempt = status.get("attempt")
    parent = record.get("parent_id")
    report: wire.HopReport = {
        "id": envelope_id,
        "parent_id": parent if isinstance(parent, str) else None,
        "actor": actor,
        "event": event,
        "route": _route(record.get("route"), actor),
        "attempt": attempt if isinstance(attempt, int) and attempt >= 1 else 1,
        "at": at,
        "reason": status.get("reason") if isinstance(status.get("reason"), str) else None,
        "error": status.get("error") if isinstance(status.get("error"), dict) else None,
    }
    redriven_at = wire.redriven_at(record.get("headers"))
    if redriven_at is not None:
        report["redriven_at"] = redriven_at
    if event == "succeeded":
        report["result"] = record.get("payload")
    return report


def reached_sink(record: Mapping[str, Any]) -> bool:
    """Whether x-sink handed this envelope to x-sump (x-sink then reported it already)."""
    route = record.get("route")
    prev = route.get("prev") if isinstance(route, dict) else None
    return isinstance(prev, list) and names.SINK in prev


def _route(route: Any, actor: str) -> wire.Route:
    """The recorded route in its wire form; a malformed one (x-sump keeps what it got) is
    reported as ending here."""
    if isinstance(route, dict):
        prev, curr, next_ = route.get("prev") or [], route.get("curr"), route.get("next") or []
        if (
            isinstance(curr, str)
            and isinstance(prev, list)
            and isinstance(next_, list)
            and all(isinstance(name, str) for name in (*prev, *next_))
        ):
            return {"prev": prev, "curr": curr, "next": next_}
    return {"prev": [], "curr": actor, "next": []}


def now_rfc3339() -> str:
    return times.rfc3339(datetime.datetime.now(datetime.UTC))


# --------------------------------------------------------------------------- the I/O


class CrewReporter:
    """Queues terminal reports and posts them from a task started at the first report."""

    def __init__(
        self,
        url: str,
        *,
        role: str,
        max_pending: int = MAX_PENDING,
        batch_size: int = BATCH_SIZE,
        timeout: float = POST_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/") + PATH
        self.role = role
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.timeout = timeout
        self.pending: deque[wire.HopReport] = deque()
        self._wake: asyncio.Event | None = None
        # Set while the poster waits for work: nothing queued and no post in flight.
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._last_warning = -FAILURE_LOG_EVERY_S
        self._dropped = DROPPED.labels(role)
        self._sent = BATCHES.labels(role, "sent")
        self._failed = BATCHES.labels(role, "failed")
        # httpx logs every request at INFO: one line per report batch would drown the
        # crew's own log (the runtime's logging is set to INFO).
        logging.getLogger("httpx").setLevel(logging.WARNING)

    def report(self, report: wire.HopReport) -> None:
        """Queue `report` for the gateway; call from the event loop (a handler)."""
        pending = self.pending
        pending.append(report)
        if len(pending) > self.max_pending:
            pending.popleft()
            self._dropped.inc()
        if self._task is None or self._task.done():
            # The runtime builds the handler before its loop runs: start on first use.
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        assert self._idle is not None
        self._idle.clear()
        self._wake.set()

    async def close(self) -> None:
        """Stop posting, after what is queued has had a short while to go out.

        A post in flight is let finish rather than cancelled: cancelled, its batch would be
        put back and sent again although the gateway may already have taken it."""
        task, self._task = self._task, None
        if task is None:
            return
        if self._idle is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), CLOSE_TIMEOUT_S)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        assert self._wake is not None
        assert self._idle is not None
        wake, idle, pause = self._wake, self._idle, RETRY_FIRST_S
        loop = asyncio.get_running_loop()
        last_post = -MIN_POST_GAP_S
        try:
            while True:
                if not self.pending:
                    idle.set()
                await wake.wait()
                wake.clear()
                while self.pending:
                    gap = last_post + MIN_POST_GAP_S - loop.time()
                    if gap > 0:
                        await asyncio.sleep(gap)  # more reports come meanwhile: one post
                    last_post = loop.time()
                    try:
                        done = await self._post_some()
                    except Exception:
                        # A bug here must cost reports, never the results or the handler.
                        log.exception("posting terminal reports failed unexpectedly")
                        done = False
                    if done:
                        pause = RETRY_FIRST_S
                        continue
                    # Reports keep coming meanwhile (bounded); wait before trying again.
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_S)
        except asyncio.CancelledError:
            # The runtime is stopping: one short last try for what is still queued.
            if self.pending:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._post_some(), CLOSE_TIMEOUT_S)
            raise
        finally:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    await self._client.aclose()
                self._client = None

    async def _post_some(self) -> bool:
        """Post the oldest batch; True when it is done with (sent, or refused for good)."""
        pending = self.pending
        batch = [pending.popleft() for _ in range(min(self.batch_size, len(pending)))]
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                headers={"content-type": "application/json", "x-asya-actor": self.role},
            )
        # ASCII-escaped, so a lone surrogate in a payload still encodes.
        body = json.dumps({"reports": batch}, separators=(",", ":"), default=str).encode("ascii")
        try:
            response = await self._client.post(self.url, content=body)
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            self._put_back(batch)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return self._could_not(f"{type(exc).__name__}: {exc}")
        if response.status_code >= 500:
            self._put_back(batch)
            return self._could_not(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code != 200:
            # Refused as malformed: it would be refused again, so it is dropped, and said so.
            self._failed.inc()
            self._dropped.inc(len(batch))
            log.warning(
                "the gateway at %s refused %d terminal report(s) with HTTP %d: %s",
                self.url, len(batch), response.status_code, response.text[:500],
            )  # fmt: skip
            return True
        self._sent.inc()
        return True

    def _put_back(self, batch: list[wire.HopReport]) -> None:
        room = max(0, self.max_pending - len(self.pending))
        kept = batch[len(batch) - room :] if room < len(batch) else batch
        self.pending.extendleft(reversed(kept))
        if len(kept) < len(batch):
            self._dropped.inc(len(batch) - len(kept))

    def _could_not(self, problem: str) -> bool:
        self._failed.inc()
        now = time.monotonic()
        if now - self._last_warning >= FAILURE_LOG_EVERY_S:
            self._last_warning = now
            log.warning(
                "cannot post terminal reports to the gateway at %s (%s); %d waiting, retried "
                "with a growing pause. Results are stored regardless; check that the gateway "
                "runs and that %s is its internal URL",
                self.url, problem, len(self.pending), env.GATEWAY_URL,
            )  # fmt: skip
        return False


def from_environ(environ: Mapping[str, str], *, role: str) -> CrewReporter | None:
    """The reporter for a crew handler; None when ASYA_GATEWAY_URL is not set."""
    url = environ.get(env.GATEWAY_URL, "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        # A bad URL must not stop results from being stored: say so, report nothing.
        log.warning(
            "%s=%r is not an http:// or https:// URL; no status is reported to the gateway",
            env.GATEWAY_URL, url,
        )  # fmt: skip
        return None
    return CrewReporter(url, role=role)
