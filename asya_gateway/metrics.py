"""Prometheus metrics of one gateway (`GET /metrics` on the public port).

Names and labels are part of the operations docs (docs/gateway.md). They live in their own
CollectorRegistry, so two gateways in one process (the tests) never share a counter.

    asya_gateway_tasks_submitted_total                       tasks created by POST /v1/tasks
    asya_gateway_tasks_finished_total{status}                tasks this replica saw end
    asya_gateway_request_duration_seconds{method,route,code} until the response headers
    asya_gateway_store_duration_seconds{operation}           each store call
    asya_gateway_sse_subscribers                             open event streams
    asya_gateway_report_batches_total                        batches on the internal port
    asya_gateway_reports_total                               reports in those batches
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from asya_gateway.store.base import Event, Page, Store, Unpublished
from asya_gateway.tasks import Task, TaskStatus
from asya_shared import wire

__all__ = [
    "CONTENT_TYPE",
    "GatewayMetrics",
    "TimedStore",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From a sub-millisecond SQLite read to a submit stuck behind a slow broker.
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.submitted = Counter(
            "asya_gateway_tasks_submitted_total", "Tasks created by POST /v1/tasks.", registry=r
        )
        self._finished = Counter(
            "asya_gateway_tasks_finished_total",
            "Tasks that reached a terminal status through this replica, by status.",
            ["status"], registry=r,
        )  # fmt: skip
        self._requests = Histogram(
            "asya_gateway_request_duration_seconds",
            "From a request's arrival to its response headers (an event stream counts until "
            "it starts), by method, route template and status code.",
            ["method", "route", "code"], buckets=SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self._store = Histogram(
            "asya_gateway_store_duration_seconds", "Duration of each store call, by operation.",
            ["operation"], buckets=SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.sse_subscribers = Gauge(
            "asya_gateway_sse_subscribers", "Event streams open right now.", registry=r
        )
        self.report_batches = Counter(
            "asya_gateway_report_batches_total",
            "Report batches accepted on the internal port.", registry=r,
        )  # fmt: skip
        self.reports = Counter(
            "asya_gateway_reports_total", "Reports in the accepted batches.", registry=r
        )
        # Every status appears from the start, so a rate() over it is never absent.
        for status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED):
            self._finished.labels(str(status))

    def finished(self, status: str) -> None:
        self._finished.labels(status).inc()

    def request(self, method: str, route: str, code: int, seconds: float) -> None:
        self._requests.labels(method, route, str(code)).observe(seconds)

    def store_call(self, operation: str, seconds: float) -> None:
        self._store.labels(operation).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TimedStore:
    """A Store that times every call into `metrics` and otherwise just delegates.

    `watch` is not timed: it is one long subscription, not a call.
    """

    def __init__(self, store: Store, metrics: GatewayMetrics) -> None:
        self.inner = store
        self._metrics = metrics

    @contextlib.contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._metrics.store_call(operation, time.perf_counter() - started)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        with self._timed("ping"):
            await self.inner.ping()

    async def create(self, task: Task, *, envelope: str | None = None) -> tuple[Task, bool]:
        with self._timed("create"):
            return await self.inner.create(task, envelope=envelope)

    async def published(self, task_id: str, envelope: str | None = None) -> None:
        with self._timed("published"):
            await self.inner.published(task_id, envelope)

    async def outbox(self, task_id: str) -> Unpublished | None:
        with self._timed("outbox"):
            return await self.inner.outbox(task_id)

    async def pause(
        self,
        task_id: str,
        *,
        envelope: str,
        route: wire.Route,
        attempt: int,
        pause: dict[str, Any],
    ) -> Task:
        with self._timed("pause"):
            return await self.inner.pause(
                task_id, envelope=envelope, route=route, attempt=attempt, pause=pause
            )

    async def resume(
        self, task_id: str, tenant: str, input: Mapping[str, Any], *, at: str
    ) -> Unpublished:
        with self._timed("resume"):
            return await self.inner.resume(task_id, tenant, input, at=at)

    async def expire_pauses(self, *, now: str, limit: int) -> list[Unpublished]:
        with self._timed("expire_pauses"):
            return await self.inner.expire_pauses(now=now, limit=limit)

    async def claim_unpublished(self, before: str, *, now: str, limit: int) -> list[Unpublished]:
        with self._timed("claim_unpublished"):
            return await self.inner.claim_unpublished(before, now=now, limit=limit)

    async def get(self, task_id: str, tenant: str) -> Task:
        with self._timed("get"):
            return await self.inner.get(task_id, tenant)

    async def list_tasks(
        self, tenant: str, *, status: TaskStatus | None, limit: int, cursor: str | None
    ) -> Page:
        with self._timed("list_tasks"):
            return await self.inner.list_tasks(tenant, status=status, limit=limit, cursor=cursor)

    async def apply(self, reports: Sequence[wire.HopReport]) -> list[Event]:
        with self._timed("apply"):
            return await self.inner.apply(reports)

    async def cancel(self, task_id: str, tenant: str, *, at: str) -> Task:
        with self._timed("cancel"):
            return await self.inner.cancel(task_id, tenant, at=at)

    async def canceled_since(self, cursor: int) -> tuple[list[str], int]:
        with self._timed("canceled_since"):
            return await self.inner.canceled_since(cursor)

    async def events_since(self, task_id: str, tenant: str, seq: int) -> list[Event]:
        with self._timed("events_since"):
            return await self.inner.events_since(task_id, tenant, seq)

    def watch(self, task_id: str | None = None) -> AsyncIterator[Event]:
        return self.inner.watch(task_id)

    async def delete_finished(self, before: str) -> int:
        with self._timed("delete_finished"):
            return await self.inner.delete_finished(before)
