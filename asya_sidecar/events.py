"""Side events (FLY) from handlers: counted, logged, and posted to ASYA_EVENTS_URL if set.

Posting is fire and forget: it never delays or fails an envelope. Events that cannot be
posted are logged and dropped; when the endpoint is slower than the handlers, at most
MAX_PENDING posts wait and newer events are dropped with a warning, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from asya_sidecar.metrics import SidecarMetrics

log = logging.getLogger("asya.sidecar.events")
MAX_PENDING = 1000


class EventForwarder:
    def __init__(self, *, url: str | None, actor: str, metrics: SidecarMetrics) -> None:
        self.url, self.actor, self.metrics = url, actor, metrics
        self._client: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def forward(self, events: list[Any], *, envelope_id: str) -> None:
        self.metrics.fly_events.inc(len(events))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("handler emitted %d side event(s): %r", len(events), events)
        if not self.url:
            return
        if len(self._pending) >= MAX_PENDING:
            log.warning("events endpoint is falling behind; dropped %d event(s)", len(events))
            return
        task = asyncio.create_task(self._post(events, envelope_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

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
        if self._pending:
            await asyncio.wait(self._pending, timeout=2.0)
        if self._client is not None:
            await self._client.aclose()
