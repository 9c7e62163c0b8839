"""Which envelope keeps killing the runtime: a ledger of runtime deaths per envelope id.

When the runtime dies with several calls in flight, any of them may have killed it (a
handler that exhausts memory, segfaults, or exits). Blaming every envelope in flight would
fail good ones that only shared a death with the culprit; blaming none would let the culprit
crash the actor for ever. So an envelope that was in flight at a death becomes a *suspect*:
its next call runs alone (the sidecar lets the calls in flight finish first and starts no
other until it is done). A suspect that dies alone CRASH_ALONE_LIMIT times is the culprit
and is failed (RuntimeCrashed); one that comes through is cleared. Two deaths alone, not
one, because something else may kill a runtime once (a node under memory pressure, a
deploy), and a good envelope deserves a second try.

The ledger lives in one sidecar's memory. Another replica, or this one after a restart,
starts without it; DELIVERY_BACKSTOP, the broker's delivery count of an envelope that was in
flight at a death, ends that loop across replicas.
"""

from __future__ import annotations

import collections
import enum

CRASH_ALONE_LIMIT = 2
DELIVERY_BACKSTOP = 6
CAPACITY = 10_000  # suspects remembered at most; the oldest are forgotten first


class Verdict(enum.Enum):
    RETRY = "retry"  # requeue the envelope; its next call runs alone
    FAIL = "fail"  # the culprit: fail it with RuntimeCrashed


class CrashLedger:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        # id -> deaths while it ran alone (0: a suspect that has not run alone yet)
        self._suspects: collections.OrderedDict[str, int] = collections.OrderedDict()

    def must_run_alone(self, envelope_id: str) -> bool:
        return envelope_id in self._suspects

    def deaths_alone(self, envelope_id: str) -> int:
        return self._suspects.get(envelope_id, 0)

    def died(self, envelope_id: str, *, alone: bool, delivery_count: int | None) -> Verdict:
        """The runtime died while this envelope's call was in flight (`alone`: the only one)."""
        deaths = self._suspects.pop(envelope_id, 0) + (1 if alone else 0)
        if deaths >= CRASH_ALONE_LIMIT or (delivery_count or 0) >= DELIVERY_BACKSTOP:
            return Verdict.FAIL
        self._suspects[envelope_id] = deaths
        while len(self._suspects) > self._capacity:
            self._suspects.popitem(last=False)
        return Verdict.RETRY

    def came_through(self, envelope_id: str) -> None:
        """Its call ended without killing the runtime: no longer a suspect."""
        self._suspects.pop(envelope_id, None)
