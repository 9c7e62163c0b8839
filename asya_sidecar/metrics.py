"""Prometheus metrics of one sidecar. Names and labels are part of the operations docs.

Label children are created once and cached, so recording on the hot path does not allocate.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From a millisecond hop to a ten-minute model call.
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


class SidecarMetrics:
    def __init__(self, actor: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.actor = actor
        r = self.registry
        self.received = Counter(
            "asya_sidecar_envelopes_received_total", "Envelopes taken from the queue.",
            ["actor"], registry=r,
        ).labels(actor)  # fmt: skip
        self._processed = Counter(
            "asya_sidecar_envelopes_processed_total",
            "Envelopes settled, by outcome (routed, succeeded, failed, sumped, retried, done, "
            "canceled, requeued).",
            ["actor", "outcome"], registry=r,
        )  # fmt: skip
        self._sent = Counter(
            "asya_sidecar_envelopes_sent_total", "Messages sent, by destination actor.",
            ["actor", "destination"], registry=r,
        )  # fmt: skip
        self._failed = Counter(
            "asya_sidecar_envelopes_failed_total",
            "Envelopes that did not succeed here, by status.reason.",
            ["actor", "reason"], registry=r,
        )  # fmt: skip
        self.processing_seconds = Histogram(
            "asya_sidecar_processing_seconds",
            "From receiving an envelope to settling it (runtime call and sends included).",
            ["actor"], buckets=SECONDS_BUCKETS, registry=r,
        ).labels(actor)  # fmt: skip
        self.runtime_seconds = Histogram(
            "asya_sidecar_runtime_seconds", "Duration of the runtime call (the handler).",
            ["actor"], buckets=SECONDS_BUCKETS, registry=r,
        ).labels(actor)  # fmt: skip
        self.in_flight = Gauge(
            "asya_sidecar_envelopes_in_flight", "Envelopes being processed right now.",
            ["actor"], registry=r,
        ).labels(actor)  # fmt: skip
        self.runtime_up = Gauge(
            "asya_sidecar_runtime_up", "1 while the runtime answers, 0 otherwise.",
            ["actor"], registry=r,
        ).labels(actor)  # fmt: skip
        self.fly_events = Counter(
            "asya_sidecar_fly_events_total", "Side events (FLY) emitted by the handler.",
            ["actor"], registry=r,
        ).labels(actor)  # fmt: skip
        # Status reports to the gateway (reporting.py); only moved when ASYA_GATEWAY_URL is set.
        self._report_batches = Counter(
            "asya_sidecar_report_batches_total",
            "Batches of status reports posted to the gateway, by result (sent, failed).",
            ["actor", "result"], registry=r,
        )  # fmt: skip
        self.report_batches_sent = self._report_batches.labels(actor, "sent")
        self.report_batches_failed = self._report_batches.labels(actor, "failed")
        self.reports_dropped = Counter(
            "asya_sidecar_reports_dropped_total",
            "Status reports dropped: the gateway was unreachable and the buffer was full, or "
            "it refused a batch.",
            ["actor"], registry=r,
        ).labels(actor)  # fmt: skip
        self._children: dict[tuple[int, str], Counter] = {}

    def processed(self, outcome: str) -> None:
        self._child(self._processed, "outcome", outcome).inc()

    def sent(self, destination: str) -> None:
        self._child(self._sent, "destination", destination).inc()

    def failed(self, reason: str) -> None:
        self._child(self._failed, "reason", reason).inc()

    def _child(self, family: Counter, label: str, value: str) -> Counter:
        key = (id(family), value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(**{"actor": self.actor, label: value})
        return child
