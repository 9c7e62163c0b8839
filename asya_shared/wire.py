"""The JSON shapes that cross process boundaries, defined once as TypedDicts.

Whatever writes or reads one of these objects (the sidecar today; the gateway, the crew and
the CLI as they need to) names its type from here instead of rebuilding dict literals by hand.
The key order of each shape is the order its JSON is written in: keep it, it is on the wire.

    Route         an envelope's `route`: {"prev", "curr", "next"}
    ErrorDetails  an exception as JSON: {"type", "mro", "message", "traceback"} and, when the
                  error says when to try again, "retry_after"; the runtime's
                  processing_error details, and `status.error`
    Status        an envelope's `status`, as every sidecar writes it
    Frame         one handler result as the runtime answers it (`{"frames": [...]}`), before
                  the sidecar has checked it against its envelope
    HopReport     one event of an envelope's life, as sidecars and the crew report it to the
                  gateway's internal port

Pure data: no I/O, and no imports of ours. A TypedDict is a plain dict at run time, so these
types cost nothing per envelope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NotRequired, Required, TypedDict


class Route(TypedDict):
    prev: list[str]  # actors already visited, oldest first
    curr: str  # the actor the envelope is addressed to now
    next: list[str]  # actors still to visit, in order


class ErrorDetails(TypedDict):
    type: str  # the exception's qualified name: `ValueError`, `mypkg.errors.QuotaError`
    mro: list[str]  # its classes, most specific first; never empty (retry rules match it)
    message: str
    traceback: str | None  # None when the error was not raised in a handler
    # Seconds the failed service asked us to wait (an HTTP Retry-After, say): the earliest
    # retry; absent when the error named no such time.
    retry_after: NotRequired[float]


# Reasons renamed since records were first written, old name -> current name. "RuntimeError"
# read like Python's exception of that name, whatever the handler raised.
RENAMED_REASONS: dict[str, str] = {"RuntimeError": "HandlerError"}


def canonical_reason(reason: str | None) -> str | None:
    """The current name of a `status.reason`, so old records match filters on the new name."""
    if reason is None:
        return None
    return RENAMED_REASONS.get(reason, reason)


class Status(TypedDict):
    phase: str  # pending | processing | retrying | succeeded | failed | paused | canceled
    actor: str  # the actor that wrote this status
    attempt: int
    max_attempts: int
    created_at: str  # RFC 3339
    updated_at: str  # RFC 3339
    deadline_at: str | None  # RFC 3339; travels forward unchanged
    reason: str | None  # why it ended where it did: HandlerError, Timeout, ParseError, ...
    error: ErrorDetails | None
    retry_since: NotRequired[str]  # on retries only: when this actor first failed on it


class FrameRoute(TypedDict, total=False):
    """A frame's route: a handler may change only `next`; absent keys mean "unchanged"."""

    prev: list[str]
    curr: str
    next: list[str]


class Frame(TypedDict, total=False):
    """A result as the runtime sent it: unchecked until the sidecar checks its route."""

    payload: Required[Any]
    route: FrameRoute
    headers: dict[str, Any]


def error_details(
    type_name: str,
    message: str,
    *,
    mro: Sequence[str] = (),
    traceback: str | None = None,
    retry_after: float | None = None,
) -> ErrorDetails:
    """Error details for `type_name`; its MRO is just itself unless `mro` says more."""
    details: ErrorDetails = {
        "type": type_name,
        "mro": list(mro) if mro else [type_name],
        "message": message,
        "traceback": traceback,
    }
    if retry_after is not None:
        details["retry_after"] = retry_after
    return details


def error_details_from(raw: object) -> ErrorDetails:
    """Whatever a process sent as error details, made safe to read; never raises.

    The runtime always sends all four keys. If another one does not: a missing type is "",
    a missing or empty mro is [type], a missing message is "" and a missing traceback None;
    values of other JSON types are turned into strings. `retry_after` is kept only when it is
    a finite number of seconds, zero or more. Other keys are dropped.
    """
    fields = raw if isinstance(raw, dict) else {}
    type_name = _text(fields.get("type"))
    mro = fields.get("mro")
    traceback = fields.get("traceback")
    return error_details(
        type_name,
        _text(fields.get("message")),
        mro=[_text(cls) for cls in mro] if isinstance(mro, list) else (),
        traceback=None if traceback is None else _text(traceback),
        retry_after=_seconds(fields.get("retry_after")),
    )


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else str(value)


# The header a redrive sets (asya_shared.redrive): {"actor", "reason", "failed_at",
# "redriven_at", "attempt"}.
REDRIVEN_FROM_HEADER = "redriven-from"


class HopReport(TypedDict):
    """What a sidecar or a crew actor tells the gateway about one envelope (one hop event).

    POSTed in batches to the gateway's internal port: `{"reports": [HopReport, ...]}`. The
    gateway applies each to the task with the same id, if there is one, moving it forward
    only (asya_gateway.tasks.advance); reports about envelopes it did not submit are ignored.
    """

    id: str  # the envelope id (= the task id for a submitted envelope)
    parent_id: str | None  # set on fan-out children
    actor: str  # the reporting actor
    # received | processing | retrying | routed | paused | succeeded | failed | canceled | fly
    # | joining
    event: str
    route: Route  # the envelope's route as this event leaves it
    attempt: int  # status.attempt at this actor
    at: str  # RFC 3339, when it happened
    reason: NotRequired[str | None]
    error: NotRequired[ErrorDetails | None]
    result: NotRequired[Any]  # x-sink, succeeded: the final payload
    events: NotRequired[list[Any]]  # event "fly": the handler's FLY events, as yielded
    # event "joining": {"done": parts arrived (ok or failed), "total": parts awaited}
    progress: NotRequired[dict[str, int]]
    # When the envelope is a redrive (its `redriven-from` header): a failed task takes up a
    # redrive of its envelope that was made after it failed (asya_gateway.tasks.advance).
    redriven_at: NotRequired[str]


REPORT_EVENTS = (
    "received", "processing", "retrying", "routed", "paused", "succeeded", "failed", "canceled",
    "fly", "joining",
)  # fmt: skip


def redriven_at(headers: Any) -> str | None:
    """When the envelope with these headers was redriven (`redriven-from.redriven_at`)."""
    source = headers.get(REDRIVEN_FROM_HEADER) if isinstance(headers, dict) else None
    moment = source.get("redriven_at") if isinstance(source, dict) else None
    return moment if isinstance(moment, str) and moment else None
