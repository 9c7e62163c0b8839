"""An envelope's `status` as every process writes and reads it: its phases, its reasons, the
status object itself, and the RFC 3339 times it holds. Pure: callers pass `now`.

The sidecar writes statuses as envelopes move (asya_sidecar.envelope re-exports these names);
a redrive (asya_shared.redrive) writes the fresh status of an envelope sent again.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any

from asya_shared import wire

__all__ = ["Phase", "Reason", "parse_timestamp", "status", "timestamp"]


class Phase(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PAUSED = "paused"
    CANCELED = "canceled"


class Reason(StrEnum):
    """Why an envelope ended where it did (`status.reason`)."""

    PARSE_ERROR = "ParseError"  # not JSON, not an object, or a required field is missing
    WRONG_ACTOR = "WrongActor"  # route.curr names another actor
    ROUTE_VIOLATION = "RouteViolation"  # a result changed route.prev/curr or named a bad actor
    INVALID_RESULT = "InvalidResult"  # the runtime answered something that is not frames
    OVERSIZE_RESULT = "OversizeResult"  # a result is larger than the broker accepts
    UNKNOWN_ACTOR = "UnknownActor"  # the next actor's queue does not exist
    # The handler raised; its own exception type is in status.error.type. Records written
    # before 0.18 say "RuntimeError": wire.canonical_reason reads that name as this one.
    HANDLER_ERROR = "HandlerError"
    RUNTIME_CRASHED = "RuntimeCrashed"  # the runtime died during this envelope, repeatedly
    TIMEOUT = "Timeout"
    POLICY_EXHAUSTED = "PolicyExhausted"
    POLICY_ROUTED = "PolicyRouted"
    CANCELED = "Canceled"  # the task was canceled at the gateway; the handler was not called


def timestamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp as an aware datetime; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def status(
    prior: wire.Status | None,
    *,
    phase: Phase,
    actor: str,
    now: datetime.datetime,
    attempt: int = 1,
    max_attempts: int = 1,
    reason: Reason | None = None,
    error: wire.ErrorDetails | None = None,
) -> wire.Status:
    """A new status; creation time and deadline carry over from the prior one."""
    stamp = timestamp(now)
    return {
        "phase": str(phase),
        "actor": actor,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "created_at": (prior and prior.get("created_at")) or stamp,
        "updated_at": stamp,
        "deadline_at": prior.get("deadline_at") if prior else None,
        "reason": str(reason) if reason else None,
        "error": error.copy() if error else None,
    }
