"""Where a launched batch job stands, read from its status the way each scheduler writes it.

Pure: a job object in, a JobState out; no I/O, no clock.

    batch/v1 Job             condition Complete=True / Failed=True; status.startTime and
                             completionTime
    Volcano Job              status.state.phase Completed / Failed, Aborted, Terminated;
                             status.conditions is its phase history
    PyTorchJob (kubeflow)    condition Succeeded=True / Failed=True; startTime, completionTime
    TrainJob (trainer v2)    condition Complete=True / Failed=True; it records no start time

`started_at` is when the job started running as far as the kind says (for a TrainJob, which
does not say, its creation time); `finished_at` is when it reached its final state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from asya_shared import jobs


class Outcome(StrEnum):
    RUNNING = "running"  # not finished yet (suspended and pending included)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class JobState:
    outcome: Outcome
    conditions: list[dict[str, Any]] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None


# Condition types meaning "ended well" and "ended badly", per condition-based kind.
_TERMINAL = {
    jobs.BATCH_JOB: ("Complete", "Failed"),
    jobs.PYTORCH_JOB: ("Succeeded", "Failed"),
    jobs.TRAIN_JOB: ("Complete", "Failed"),
}
_VOLCANO_FAILED = ("Failed", "Aborted", "Terminated")


def read(kind: jobs.JobKind, job: Mapping[str, Any]) -> JobState:
    status = job.get("status") or {}
    if not isinstance(status, dict):
        status = {}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if kind == jobs.VOLCANO_JOB:
        return _volcano(status, conditions)
    good, bad = _TERMINAL[kind]
    started = _text(status.get("startTime"))
    if started is None and kind == jobs.TRAIN_JOB:
        started = _text((job.get("metadata") or {}).get("creationTimestamp"))
    for kind_of_end, outcome in ((bad, Outcome.FAILED), (good, Outcome.SUCCEEDED)):
        ended = _true(conditions, kind_of_end)
        if ended is not None:
            finished = _text(status.get("completionTime")) or _text(ended.get("lastTransitionTime"))
            return JobState(outcome, conditions, started, finished)
    return JobState(Outcome.RUNNING, conditions, started)


def _volcano(status: Mapping[str, Any], conditions: list[dict[str, Any]]) -> JobState:
    state = status.get("state") or {}
    phase = state.get("phase") if isinstance(state, dict) else None
    started = next(
        (_text(c.get("lastTransitionTime")) for c in conditions if c.get("status") == "Running"),
        None,
    )
    if phase == "Completed":
        outcome = Outcome.SUCCEEDED
    elif phase in _VOLCANO_FAILED:
        outcome = Outcome.FAILED
    else:
        return JobState(Outcome.RUNNING, conditions, started)
    finished = _text(state.get("lastTransitionTime")) if isinstance(state, dict) else None
    return JobState(outcome, conditions, started, finished)


def _true(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
