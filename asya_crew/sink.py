"""x-sink: stores the record of every finished envelope; forwards failures to x-sump.

Runs inside the standard runtime (ASYA_HANDLER=asya_crew.sink.Sink.handle) next to an
ordinary sidecar, which delivers every envelope whose route has ended: phase "succeeded", or
"failed" once the actor's resiliency policy gave up. A store error is raised, never
swallowed: the runtime answers 500 and the sidecar redelivers the envelope later, so a result
is acknowledged only once it is stored.

A part of a join (header x-asya-join-part) that failed or was canceled is stored, then handed
to x-join instead of x-sump: x-join counts it as missing and decides for the whole join.

With ASYA_GATEWAY_URL set, once a record is stored x-sink reports how the envelope ended
(succeeded with the result, failed, canceled) to the gateway, in the background
(reporting.py): the gateway being down never fails or slows the handler.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from asya_crew import config, exposition, reporting
from asya_shared import joins, names, records, stores

FAILED = "failed"
CANCELED = "canceled"


class Sink:
    """Built once by the runtime, with no arguments; settings come from the environment."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.store = stores.open_store(config.store_url(env, config.RESULT_STORE), environ=env)
        self.reporter = reporting.from_environ(env, role=names.SINK)
        if environ is None:  # built by the runtime in a crew pod, not by a test
            exposition.serve_from_handler(env)

    async def handle(self, payload: Any) -> AsyncGenerator[Any, Any]:
        fields: dict[str, Any] = {}
        for name in records.FIELDS:
            fields[name] = yield "GET", f".{name}"
        result = records.build(fields, payload)
        await self.store.put(records.key(result["id"]), records.encode(result))
        if self.reporter is not None:
            report = reporting.terminal_report(result, actor=names.SINK, at=reporting.now_rfc3339())
            if report is not None:
                self.reporter.report(report)
        if goes_to_join(result):
            # x-join decides for the whole join (fail or partial) and does not wait out the
            # join's timeout for a part that will never come.
            yield "SET", f".headers.{joins.FORWARDED_HEADER}", True
            yield "SET", ".route.next", [names.JOIN]
            yield payload
            return
        if goes_to_sump(result["status"]):
            # The sidecar advances the route to x-sump and keeps the status (reason, error).
            # The steps not yet run stay behind x-sump, which runs nothing, so that the sump
            # record still says where the envelope was going (`asya redrive` sends it there).
            yield "SET", ".route.next", [names.SUMP, *remaining_steps(result["route"])]
            yield payload
        # Yielding nothing answers 204: the envelope is done.


def goes_to_join(result: records.Record) -> bool:
    """A part of a join that failed or was canceled goes to x-join, which counts it, unless
    it came from x-join already (x-join failing on it must not send it round again)."""
    status, headers = result["status"], result["headers"]
    if not isinstance(status, dict) or status.get("phase") not in (FAILED, CANCELED):
        return False
    if not isinstance(headers, dict) or headers.get(joins.FORWARDED_HEADER):
        return False
    return bool(headers.get(joins.PART_HEADER))


def remaining_steps(route: Any) -> list[str]:
    """The actors a failed envelope had still to visit (its route.next), or none when the
    route is not the shape a sidecar writes."""
    steps = route.get("next") if isinstance(route, dict) else None
    if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
        return []
    return list(steps)


def goes_to_sump(status: Any) -> bool:
    """Failed envelopes are kept as results and also collected by x-sump."""
    return isinstance(status, dict) and status.get("phase") == FAILED
