"""Side events (FLY) from handlers: counted, logged, and posted to ASYA_EVENTS_URL if set.

Posting is fire and forget: it never delays or fails an envelope. One worker posts the
events in the order the handlers emitted them (a token stream read out of order is garbage),
merging events of one envelope that queued up behind each other into one post. Events that
cannot be posted are logged and dropped; when the endpoint is slower than the handlers, at
most MAX_PENDING batches wait and newer events are dropped with a warning, so memory stays
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import httpx

from asya_sidecar.metrics import SidecarMetrics

log = logging.getLogger("asya.sidecar.events")
MAX_PENDING = 1000
CLOSE_GRACE_SECONDS = 2.0


class EventForwarder:
    def __init__(self, *, url: str | None, actor: str, metrics: SidecarMetrics) -> None:
        self.url, self.actor, self.metrics = url, actor, metrics
        self._client: httpx.AsyncClient | None = None
        self._backlog: deque[tuple[str, list[Any]]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None

    def forward(self, events: list[Any], *, envelope_id: str) -> None:
        self.metrics.fly_events.inc(len(events))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("handler emitted %d side event(s): %r", len(events), events)
        if not self.url:
            return
        if len(self._backlog) >= MAX_PENDING:
            log.warning("events endpoint is falling behind; dropped %d event(s)", len(events))
            return
        self._backlog.append((envelope_id, list(events)))
        self._idle.clear()
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._post_in_order())

    async def _post_in_order(self) -> None:
        while True:
            if not self._backlog:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            envelope_id, events = self._backlog.popleft()
            while self._backlog and self._backlog[0][0] == envelope_id:
                events.extend(self._backlog.popleft()[1])
            await self._post(events, envelope_id)

    async def _post(self, events: list[Any], envelope_id: str) -> None:
        assert self.url is not None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        body = {"actor": self.actor, "envelope_id": envelope_id, "events": events}
        try:
            response = await self._client.post(self.url, json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("could not post side events to %s: %s", self.url, exc)

    async def close(self) -> None:
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), CLOSE_GRACE_SECONDS)
            if self._backlog:
                log.warning(
                    "dropped %d unposted side event batch(es) at shutdown", len(self._backlog)
                )
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._client is not None:
            await self._client.aclose()
