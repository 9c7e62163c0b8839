"""What follows a launched job: the decision the job watcher acts on. Pure: no I/O, no clock
(`now` comes in).

Launch parked the envelope in the job (annotation asya.sh/envelope) exactly as it received
it: `route.curr` is the launching actor. When the job ends, the envelope goes on as if the
handler had just returned, with the job's facts added to the payload under `job`:

- succeeded: the route advances (prev += [curr], curr = next[0]) and the envelope goes to
  the next actor, phase pending; with no next actor, to x-sink, phase succeeded;
- failed: to x-sink, phase failed, reason `JobFailed`, the job's conditions in the error;
- still running past the envelope's `status.deadline_at`: to x-sink, phase failed, reason
  `Timeout` (as a sidecar fails an expired envelope), and the job is to be deleted, since
  nothing will read what it produces.

A payload that is not a JSON object is kept under `payload` next to `job`.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asya_operator.job_state import JobState, Outcome
from asya_shared import names, wire

JOB_FAILED = "JobFailed"
TIMEOUT = "Timeout"
# The most of a job's conditions that goes into an error message.
MAX_CONDITIONS_TEXT = 4000


class ParkedEnvelopeError(ValueError):
    """The job's parked envelope is missing or unreadable: nothing can be continued."""


@dataclass(frozen=True)
class Wait:
    """The job is still running and the deadline (if any) has not passed."""


@dataclass(frozen=True)
class Send:
    actor: str  # where the envelope goes next
    envelope: dict[str, Any]
    delete_job: bool = False  # the deadline passed: stop the job


Decision = Wait | Send


def parse_parked(text: str | None) -> dict[str, Any]:
    if not text:
        raise ParkedEnvelopeError("the job has no parked envelope (annotation missing)")
    try:
        parked = json.loads(text)
    except ValueError as exc:
        raise ParkedEnvelopeError(f"the parked envelope is not JSON: {exc}") from None
    route = parked.get("route") if isinstance(parked, dict) else None
    if (
        not isinstance(parked, dict)
        or not isinstance(parked.get("id"), str)
        or not isinstance(route, dict)
        or not isinstance(route.get("curr"), str)
        or not all(isinstance(route.get(k, []), list) for k in ("prev", "next"))
    ):
        raise ParkedEnvelopeError("the parked envelope lacks id or route (prev, curr, next)")
    return parked


def decide(
    parked: Mapping[str, Any],
    state: JobState,
    *,
    job: Mapping[str, Any],
    now: datetime.datetime,
) -> Decision:
    """`job` identifies the job in the payload: apiVersion, kind, namespace, name, uid."""
    facts = {
        **job,
        "outcome": str(state.outcome),
        "conditions": state.conditions,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
    }
    if state.outcome == Outcome.SUCCEEDED:
        return _forward(parked, facts, now)
    if state.outcome == Outcome.FAILED:
        details = wire.error_details(
            JOB_FAILED,
            f"{job.get('kind')} {job.get('namespace')}/{job.get('name')} failed; conditions: "
            f"{_conditions_text(state.conditions)}",
        )
        return Send(names.SINK, _finish(parked, facts, now, reason=JOB_FAILED, error=details))
    deadline = deadline_of(parked)
    if deadline is not None and now >= deadline:
        details = wire.error_details(
            "DeadlineExceeded",
            f"status.deadline_at {_stamp(deadline)} passed while {job.get('kind')} "
            f"{job.get('namespace')}/{job.get('name')} was still running; the job is deleted",
            mro=["DeadlineExceeded", "TimeoutError"],
        )
        envelope = _finish(parked, facts, now, reason=TIMEOUT, error=details)
        return Send(names.SINK, envelope, delete_job=True)
    return Wait()


def deadline_of(parked: Mapping[str, Any]) -> datetime.datetime | None:
    """The envelope's `status.deadline_at`, or None when it has none (or none readable)."""
    return _parse_time((parked.get("status") or {}).get("deadline_at"))


def _forward(parked: Mapping[str, Any], facts: dict[str, Any], now: datetime.datetime) -> Send:
    route = parked["route"]
    prev = [*route.get("prev", []), route["curr"]]
    rest = list(route.get("next", []))
    curr, rest = (rest[0], rest[1:]) if rest else (names.SINK, [])
    out = _base(parked, facts)
    out["route"] = {"prev": prev, "curr": curr, "next": rest}
    phase = "succeeded" if curr == names.SINK else "pending"
    actor = route["curr"] if curr == names.SINK else curr
    out["status"] = _status(parked, phase=phase, actor=actor, now=now)
    return Send(curr, out)


def _finish(
    parked: Mapping[str, Any],
    facts: dict[str, Any],
    now: datetime.datetime,
    *,
    reason: str,
    error: wire.ErrorDetails,
) -> dict[str, Any]:
    route = parked["route"]
    out = _base(parked, facts)
    # Steps not taken stay in route.next, so the failure shows what was left undone.
    out["route"] = {
        "prev": [*route.get("prev", []), route["curr"]],
        "curr": names.SINK,
        "next": list(route.get("next", [])),
    }
    out["status"] = _status(
        parked, phase="failed", actor=route["curr"], now=now, reason=reason, error=error
    )
    return out


def _base(parked: Mapping[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in parked.items() if k not in ("route", "status", "payload")}
    payload = parked.get("payload")
    out["payload"] = (
        {**payload, "job": facts}
        if isinstance(payload, dict)
        else {"payload": payload, "job": facts}
    )
    out["headers"] = dict(parked.get("headers") or {})
    return out


def _status(
    parked: Mapping[str, Any],
    *,
    phase: str,
    actor: str,
    now: datetime.datetime,
    reason: str | None = None,
    error: wire.ErrorDetails | None = None,
) -> wire.Status:
    prior = parked.get("status") or {}
    stamp = _stamp(now)
    finished = phase in ("succeeded", "failed")
    return {
        "phase": phase,
        "actor": actor,
        "attempt": int(prior.get("attempt") or 1) if finished else 1,
        "max_attempts": int(prior.get("max_attempts") or 1) if finished else 1,
        "created_at": prior.get("created_at") or stamp,
        "updated_at": stamp,
        "deadline_at": prior.get("deadline_at"),
        "reason": reason,
        "error": error,
    }


def _conditions_text(conditions: list[dict[str, Any]]) -> str:
    text = json.dumps(conditions, separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_CONDITIONS_TEXT:
        return text[:MAX_CONDITIONS_TEXT] + "..."
    return text


def _stamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)
