"""What one scenario run measured, counted from what reached x-sink, x-sump and the last hop.

Pure: the harness reads the stores and the call log, this module does the arithmetic, so the
counting rules (what is lost, what is a duplicate, which fault a duplicate belongs to) are
tested on their own.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# A duplicate seen before the first fault (none should be) is counted in its own bucket.
BEFORE_ANY_FAULT = -1


@dataclass(frozen=True)
class Call:
    """One call of the last hop's handler, as the handler recorded it."""

    envelope_id: str
    at: float  # wall-clock seconds (time.time), comparable with the harness's fault times


@dataclass
class Outcome:
    scenario: str
    transport: str
    sent: int
    succeeded: int
    failed: int
    in_sump: int
    lost: int
    duplicates: int
    faults_injected: int
    max_dup_per_fault: int
    seconds: float
    # Beyond the published counts: whether the scenario's own bounds held, and if not, why.
    passed: bool = True
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.passed = False
        self.problems.append(problem)

    def check(self, holds: bool, problem: str) -> None:
        if not holds:
            self.fail(problem)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def duplicates_per_fault(calls: Iterable[Call], fault_times: Sequence[float]) -> dict[int, int]:
    """Extra calls (every call of an id after its first), each put on the latest fault injected
    before it: index into `fault_times` (sorted), or BEFORE_ANY_FAULT."""
    by_id: dict[str, list[float]] = collections.defaultdict(list)
    for call in calls:
        by_id[call.envelope_id].append(call.at)
    buckets: dict[int, int] = collections.Counter()
    for times in by_id.values():
        for at in sorted(times)[1:]:
            buckets[bisect.bisect_right(fault_times, at) - 1] += 1
    return dict(buckets)


def tally(
    *,
    scenario: str,
    transport: str,
    sent: Sequence[str],
    sink_phases: Mapping[str, str],
    sump_ids: Iterable[str],
    calls: Sequence[Call],
    fault_times: Sequence[float],
    seconds: float,
) -> Outcome:
    """`sink_phases`: id -> status.phase of what x-sink stored; `sump_ids`: ids x-sump holds.
    Only ids we sent count (a store may hold older runs' records)."""
    wanted = set(sent)
    sink = {i: phase for i, phase in sink_phases.items() if i in wanted}
    sump = set(sump_ids) & wanted
    per_fault = duplicates_per_fault(calls, sorted(fault_times))
    return Outcome(
        scenario=scenario,
        transport=transport,
        sent=len(wanted),
        succeeded=sum(1 for phase in sink.values() if phase == "succeeded"),
        failed=sum(1 for phase in sink.values() if phase != "succeeded"),
        in_sump=len(sump),
        lost=len(wanted - sink.keys() - sump),
        duplicates=sum(per_fault.values()),
        faults_injected=len(fault_times),
        max_dup_per_fault=max(per_fault.values(), default=0),
        seconds=round(seconds, 1),
    )
