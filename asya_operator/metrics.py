"""Prometheus metrics of the operator. Names and labels are part of docs/operator.md.

The actor series (`asya_actor_*`) mirror what the operator last wrote to each AsyncActor's
status, so they carry one series per actor and label value, and go away with the actor.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import AsyncIterator, Iterator

import kopf
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from asya_operator.models import AsyncActorStatus
from asya_operator.queues import BrokerUnavailable, QueueGone

# Reconcile outcomes, from what the handlers raise.
SUCCEEDED = "succeeded"  # everything applied, status written
RETRYING = "retrying"  # kopf.TemporaryError: broker down, API unavailable, KEDA missing
FAILED = "failed"  # kopf.PermanentError: the spec or the configuration must change
CRASHED = "crashed"  # anything else: a bug

# From a quick no-op reconcile to one waiting on a slow broker or API server.
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Key = tuple[str, str]  # (namespace, name) of an actor


def reconcile_outcome(exc: BaseException | None) -> str | None:
    """The `outcome` label of a reconcile that raised `exc` (None: it returned).

    None for a cancellation: the operator is stopping, and that says nothing about the actor."""
    if exc is None:
        return SUCCEEDED
    if isinstance(exc, kopf.TemporaryError):
        return RETRYING
    if isinstance(exc, kopf.PermanentError):
        return FAILED
    if isinstance(exc, Exception):
        return CRASHED
    return None


def queue_outcome(exc: BaseException | None) -> str | None:
    """The `outcome` label of a queue operation that raised `exc` (None: cancelled)."""
    if exc is None:
        return "ok"
    if isinstance(exc, BrokerUnavailable):
        return "broker_unavailable"
    if isinstance(exc, QueueGone):
        return "queue_gone"
    if isinstance(exc, Exception):
        return "error"
    return None


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "asya_operator_reconciles_total",
            "Reconciles of AsyncActors, by outcome (succeeded, retrying, failed, crashed).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.reconcile_seconds = Histogram(
            "asya_operator_reconcile_duration_seconds",
            "Duration of one reconcile, waiting for the actor's lock excluded.",
            buckets=SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_operations = Counter(
            "asya_operator_queue_operations_total",
            "Queue administration calls on the brokers, by operation (ensure, depth, delete) "
            "and outcome (ok, broker_unavailable, queue_gone, error).",
            ["operation", "outcome"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "asya_actor_queue_depth",
            "Messages in the actor's queue at the last status refresh.",
            ["namespace", "actor", "transport"], registry=r,
        )  # fmt: skip
        self.replicas = Gauge(
            "asya_actor_replicas",
            "Replicas of the actor's Deployment, by kind (ready, desired).",
            ["namespace", "actor", "kind"], registry=r,
        )  # fmt: skip
        self.status = Gauge(
            "asya_actor_status",
            "1 for the actor's current status word (Creating, Running, Napping, Degraded, "
            "Error, Terminating).",
            ["namespace", "actor", "status"], registry=r,
        )  # fmt: skip
        # What each actor's series carry now, so a change of label value can drop the old one.
        self._transports: dict[Key, str] = {}
        self._words: dict[Key, str] = {}

    @contextlib.asynccontextmanager
    async def reconcile(self) -> AsyncIterator[None]:
        started = time.monotonic()
        outcome: str | None = SUCCEEDED
        try:
            yield
        except BaseException as exc:
            outcome = reconcile_outcome(exc)
            raise
        finally:
            if outcome is not None:
                self.reconciles.labels(outcome).inc()
                self.reconcile_seconds.observe(time.monotonic() - started)

    @contextlib.contextmanager
    def queue_operation(self, operation: str) -> Iterator[None]:
        outcome: str | None = "ok"
        try:
            yield
        except BaseException as exc:
            outcome = queue_outcome(exc)
            raise
        finally:
            if outcome is not None:
                self.queue_operations.labels(operation, outcome).inc()

    def record_status(self, namespace: str, name: str, status: AsyncActorStatus) -> None:
        """Set the actor's series from the status the operator has just decided on."""
        key = (namespace, name)
        transport, depth = status.transport, status.queue_depth
        old_transport = self._transports.get(key)
        if old_transport is not None and (old_transport != transport or depth is None):
            _remove(self.queue_depth, namespace, name, old_transport)
            del self._transports[key]
        if transport and depth is not None:
            self.queue_depth.labels(namespace, name, transport).set(depth)
            self._transports[key] = transport

        replicas = (("ready", status.ready_replicas), ("desired", status.desired_replicas))
        for kind, value in replicas:
            if value is None:
                _remove(self.replicas, namespace, name, kind)
            else:
                self.replicas.labels(namespace, name, kind).set(value)

        word, old_word = status.status, self._words.get(key)
        if old_word is not None and old_word != word:
            _remove(self.status, namespace, name, old_word)
            del self._words[key]
        if word:
            self.status.labels(namespace, name, word).set(1)
            self._words[key] = word

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted actor."""
        key = (namespace, name)
        transport = self._transports.pop(key, None)
        if transport is not None:
            _remove(self.queue_depth, namespace, name, transport)
        for kind in ("ready", "desired"):
            _remove(self.replicas, namespace, name, kind)
        word = self._words.pop(key, None)
        if word is not None:
            _remove(self.status, namespace, name, word)


def _remove(family: Gauge, *labels: str) -> None:
    # remove() raises KeyError for a series that was never set; gone is gone.
    with contextlib.suppress(KeyError):
        family.remove(*labels)


def _default() -> OperatorMetrics:
    registry = CollectorRegistry()
    # The operator's own memory and CPU: what to look at when it is slow or OOM-killed.
    prometheus_client.ProcessCollector(registry=registry)
    return OperatorMetrics(registry)


# The one set the handlers update and `asya operator --metrics-port` serves.
METRICS = _default()


def serve(
    host: str, port: int, registry: CollectorRegistry | None = None
) -> tuple[http.server.HTTPServer, threading.Thread] | None:
    """Serve /metrics on host:port in a daemon thread; None when port is 0 (metrics off).

    Raises OSError when the address cannot be bound."""
    if port == 0:
        return None
    server, thread = prometheus_client.start_http_server(
        port, addr=host, registry=registry or METRICS.registry
    )
    return server, thread
