"""x-sump: keeps the record of everything that could not be processed, and counts it.

It receives unparsable or misrouted input from any sidecar (with the original bytes as the
payload), and failed results forwarded by x-sink. It stores the same record as x-sink, logs
one WARNING line per envelope and counts envelopes by reason and actor, so an alert can fire
on the rate. It never forwards anything: this is the end of the line.

With ASYA_GATEWAY_URL set, x-sump reports `failed` to the gateway for what never reached
x-sink (x-sink reported the rest itself), in the background (reporting.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from prometheus_client import Counter

from asya_crew import config, exposition, reporting
from asya_shared import names, records, stores

UNKNOWN = "unknown"

log = logging.getLogger("asya.crew.sump")

# In the default registry, which the crew's metrics endpoint serves.
ENVELOPES = Counter(
    "asya_sump_envelopes_total",
    "Envelopes received by x-sump, by the reason they failed and the actor that failed them.",
    ["reason", "actor"],
)


class Sump:
    """Built once by the runtime, with no arguments; settings come from the environment."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.store = stores.open_store(config.store_url(env, config.SUMP_STORE), environ=env)
        self.reporter = reporting.from_environ(env, role=names.SUMP)
        if environ is None:  # built by the runtime in a crew pod, not by a test
            exposition.serve_from_handler(env)

    async def handle(self, payload: Any) -> AsyncGenerator[Any, Any]:
        fields: dict[str, Any] = {}
        for name in records.FIELDS:
            fields[name] = yield "GET", f".{name}"
        result = records.build(fields, payload)
        await self.store.put(records.key(result["id"]), records.encode(result))
        # Counted and logged only once stored: a redelivery after a store error must not
        # count the same envelope twice (a redelivery after a crash still may).
        reason, actor = labels(result["status"])
        ENVELOPES.labels(reason=reason, actor=actor).inc()
        if self.reporter is not None and not reporting.reached_sink(result):
            report = reporting.terminal_report(
                result, actor=names.SUMP, at=reporting.now_rfc3339(), event="failed"
            )
            if report is not None:
                self.reporter.report(report)
        log.warning(
            "envelope %s reached x-sump: reason=%s actor=%s",
            result["id"],
            reason,
            actor,
            extra={"envelope_id": result["id"]},
        )
        # Yielding nothing answers 204: the envelope is done.


def labels(status: Any) -> tuple[str, str]:
    """(reason, actor) for the counter; "unknown" where the status does not say."""
    if not isinstance(status, dict):
        return UNKNOWN, UNKNOWN
    return _label(status.get("reason")), _label(status.get("actor"))


def _label(value: Any) -> str:
    return value if isinstance(value, str) and value else UNKNOWN
