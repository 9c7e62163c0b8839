"""The envelope: parsing it, checking handler results against it, and moving its route on.

This is the only module that knows the wire format (docs/envelope.md); the shapes of its parts
(route, status, error details, frames) are declared in asya_shared.wire. It is pure: bytes and
dicts in, dicts out. It reads no clock and invents no ids; callers pass `now` and new ids.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asya_shared import names, wire

# Defined in asya_shared so the CLI and the gateway write statuses as the sidecar does;
# re-exported (`as`), so the sidecar keeps reading them from the module of the wire format.
from asya_shared.statuses import Phase as Phase
from asya_shared.statuses import Reason as Reason
from asya_shared.statuses import parse_timestamp as parse_timestamp
from asya_shared.statuses import status as status
from asya_shared.statuses import timestamp as timestamp
from asya_sidecar import codec


@dataclass(frozen=True)
class Route:
    prev: tuple[str, ...]
    curr: str
    next: tuple[str, ...]

    def to_json(self) -> wire.Route:
        return {"prev": list(self.prev), "curr": self.curr, "next": list(self.next)}

    def advanced(self) -> Route:
        """The route after `curr` is done: the next actor, or x-sink when none is left."""
        done = (*self.prev, self.curr)
        if self.next:
            return Route(done, self.next[0], self.next[1:])
        return Route(done, names.SINK, ())


@dataclass(frozen=True)
class Envelope:
    fields: Mapping[str, Any]  # the whole object as received, unknown fields included
    id: str
    route: Route
    headers: Mapping[str, Any]
    # As received: only checked to be an object (any producer may have written it), so its
    # fields are read with .get() and checked before use.
    status: wire.Status | None
    payload: Any
    deadline: datetime.datetime | None = None  # status.deadline_at

    @property
    def attempt(self) -> int:
        """This actor's attempt number: counted only on envelopes it sent itself to retry."""
        status = self.status
        if not status:
            return 1
        if status.get("phase") == Phase.RETRYING and status.get("actor") == self.route.curr:
            attempt = status.get("attempt")
            if isinstance(attempt, int) and attempt >= 1:
                return attempt
        return 1

    def retrying_since(self, now: datetime.datetime) -> datetime.datetime:
        """When this actor first failed on the envelope (now, if this is the first attempt)."""
        if self.status and self.attempt > 1:
            since = parse_timestamp(self.status.get("retry_since"))
            if since is not None:
                return since
        return now


@dataclass(frozen=True)
class Invalid:
    """Input or a result that cannot be processed, and why."""

    reason: Reason
    message: str
    fields: Mapping[str, Any] | None = None  # the parsed object, when the input was one


@dataclass(frozen=True)
class Frame:
    """One handler result, checked against the envelope it came from."""

    payload: Any
    next: tuple[str, ...]
    headers: Mapping[str, Any]


def encode(fields: Mapping[str, Any]) -> bytes:
    return codec.dumps(fields)


# ------------------------------------------------------------------------------ parsing


def parse(body: bytes, *, actor: str) -> Envelope | Invalid:
    """Parse one message addressed to `actor`; anything else is Invalid with a reason."""
    try:
        fields = codec.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        return Invalid(Reason.PARSE_ERROR, f"not valid JSON: {exc}")
    if not isinstance(fields, dict):
        return Invalid(Reason.PARSE_ERROR, f"an envelope is a JSON object, not {_kind(fields)}")
    problem = _shape_problem(fields)
    if problem:
        return Invalid(Reason.PARSE_ERROR, problem, fields)
    raw_route = fields["route"]
    route = Route(
        tuple(raw_route.get("prev") or ()), raw_route["curr"], tuple(raw_route.get("next") or ())
    )
    if route.curr != actor:
        return Invalid(
            Reason.WRONG_ACTOR,
            f"route.curr is {route.curr!r} but this actor is {actor!r}",
            fields,
        )
    status_ = fields.get("status")
    return Envelope(
        fields=fields,
        id=fields["id"],
        route=route,
        headers=fields.get("headers") or {},
        status=status_,
        payload=fields["payload"],
        deadline=parse_timestamp((status_ or {}).get("deadline_at")),
    )


def _shape_problem(fields: Mapping[str, Any]) -> str | None:
    missing = [key for key in ("id", "route", "payload") if key not in fields]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    if not isinstance(fields["id"], str) or not fields["id"]:
        return "id must be a non-empty string"
    parent = fields.get("parent_id")
    if parent is not None and not isinstance(parent, str):
        return "parent_id must be a string or null"
    route = fields["route"]
    if not isinstance(route, dict):
        return f"route must be an object, not {_kind(route)}"
    if not isinstance(route.get("curr"), str):
        return "route.curr must be an actor name"
    for key in ("prev", "next"):
        value = route.get(key, [])
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return f"route.{key} must be a list of actor names"
    bad = _bad_actor_names([route["curr"], *(route.get("next") or [])])
    if bad:
        return f"route names {bad!r}, which is not a valid actor name"
    for key in ("headers", "status"):
        value = fields.get(key)
        if value is not None and not isinstance(value, dict):
            return f"{key} must be an object, not {_kind(value)}"
    deadline = (fields.get("status") or {}).get("deadline_at")
    if deadline is not None and parse_timestamp(deadline) is None:
        return f"status.deadline_at must be an RFC 3339 timestamp or null, not {deadline!r}"
    return None


def _bad_actor_names(candidates: list[str]) -> str | None:
    for name in candidates:
        try:
            names.check_actor_name(name)
        except names.InvalidName:
            return name
    return None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "a scalar"


# --------------------------------------------------------------------------- results


def check_frame(envelope: Envelope, frame: object) -> Frame | Invalid:
    """Accept a result only if it changed nothing but `route.next` and the headers.

    `frame` is what the runtime sent as a `wire.Frame`, unchecked: so every part of it is
    checked here, its type included.
    """
    if not isinstance(frame, dict) or "payload" not in frame:
        return Invalid(
            Reason.INVALID_RESULT, f"a frame must be an object with a payload: {frame!r}"
        )
    headers = frame.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return Invalid(Reason.INVALID_RESULT, f"frame headers must be an object: {headers!r}")
    route = frame.get("route")
    if route is None:
        return Frame(frame["payload"], envelope.route.next, headers or {})
    if not isinstance(route, dict):
        return Invalid(Reason.ROUTE_VIOLATION, f"frame route must be an object, not {_kind(route)}")
    prev, curr = route.get("prev", list(envelope.route.prev)), route.get("curr")
    if prev != list(envelope.route.prev):
        return Invalid(
            Reason.ROUTE_VIOLATION,
            f"the handler changed route.prev from {list(envelope.route.prev)!r} to {prev!r}; "
            "only route.next may change",
        )
    if curr != envelope.route.curr:
        return Invalid(
            Reason.ROUTE_VIOLATION,
            f"the handler changed route.curr from {envelope.route.curr!r} to {curr!r}; "
            "only route.next may change",
        )
    next_ = route.get("next", [])
    if not isinstance(next_, list) or not all(isinstance(item, str) for item in next_):
        return Invalid(Reason.ROUTE_VIOLATION, f"route.next must be a list of names: {next_!r}")
    bad = _bad_actor_names(next_)
    if bad is not None:
        return Invalid(Reason.ROUTE_VIOLATION, f"route.next names {bad!r}, not a valid actor")
    return Frame(frame["payload"], tuple(next_), headers or {})


# ---------------------------------------------------------------------- building output


def forward(
    envelope: Envelope,
    frame: Frame,
    *,
    index: int,
    headers: Mapping[str, Any],
    now: datetime.datetime,
    keep_status: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The envelope for result `index` of this call, and the actor it goes to next.

    `keep_status` is for crew actors, which relay an envelope without changing its outcome.
    """
    route = Route(envelope.route.prev, envelope.route.curr, frame.next).advanced()
    out = dict(envelope.fields)
    if index > 0:
        out["id"] = f"{envelope.id}-{index}"
        out["parent_id"] = envelope.id
    out["route"] = route.to_json()
    out["headers"] = dict(headers)
    out["payload"] = frame.payload
    if keep_status:
        return route.curr, out
    if route.curr == names.SINK:
        # Finished: the status says which actor finished it, and on which attempt.
        out["status"] = status(
            envelope.status, phase=Phase.SUCCEEDED, actor=envelope.route.curr, now=now,
            attempt=envelope.attempt, max_attempts=_max_attempts(envelope),
        )  # fmt: skip
    else:
        out["status"] = status(envelope.status, phase=Phase.PENDING, actor=route.curr, now=now)
    return route.curr, out


def finish(
    envelope: Envelope,
    *,
    phase: Phase,
    headers: Mapping[str, Any],
    now: datetime.datetime,
    reason: Reason | None = None,
    error: wire.ErrorDetails | None = None,
) -> dict[str, Any]:
    """The envelope that reports this call's end to x-sink; the payload is left as it came.

    Steps not taken stay in route.next, so a failure shows what was left undone.
    """
    out = dict(envelope.fields)
    done = (*envelope.route.prev, envelope.route.curr)
    out["route"] = Route(done, names.SINK, envelope.route.next).to_json()
    out["headers"] = dict(headers)
    out["status"] = status(
        envelope.status,
        phase=phase,
        actor=envelope.route.curr,
        now=now,
        attempt=envelope.attempt,
        max_attempts=_max_attempts(envelope),
        reason=reason,
        error=error,
    )
    return out


def _max_attempts(envelope: Envelope) -> int:
    """The attempt budget this actor's policy gave, as recorded on its own retries."""
    if envelope.status and envelope.attempt > 1:
        recorded = envelope.status.get("max_attempts")
        if isinstance(recorded, int) and recorded >= envelope.attempt:
            return recorded
    return 1


def retry(
    envelope: Envelope,
    *,
    attempt: int,
    max_attempts: int,
    retrying_since: datetime.datetime,
    headers: Mapping[str, Any],
    now: datetime.datetime,
    reason: Reason,
    error: wire.ErrorDetails,
) -> dict[str, Any]:
    """The same envelope, addressed to the same actor again as attempt number `attempt`."""
    out = dict(envelope.fields)
    out["headers"] = dict(headers)
    again = status(
        envelope.status,
        phase=Phase.RETRYING,
        actor=envelope.route.curr,
        now=now,
        attempt=attempt,
        max_attempts=max_attempts,
        reason=reason,
        error=error,
    )
    # When this actor first failed on it, so that maxDuration can be measured across hops.
    again["retry_since"] = timestamp(retrying_since)
    out["status"] = again
    return out


def reroute(
    envelope: Envelope,
    actors: tuple[str, ...],
    *,
    headers: Mapping[str, Any],
    now: datetime.datetime,
    reason: Reason,
    error: wire.ErrorDetails,
) -> tuple[str, dict[str, Any]]:
    """The envelope sent on to `actors` (a policy's thenRoute) instead of its planned route."""
    route = Route((*envelope.route.prev, envelope.route.curr), actors[0], actors[1:])
    out = dict(envelope.fields)
    out["route"] = route.to_json()
    out["headers"] = dict(headers)
    out["status"] = status(
        envelope.status,
        phase=Phase.PENDING,
        actor=route.curr,
        now=now,
        reason=reason,
        error=error,
    )
    return route.curr, out


def to_sump(
    fields: Mapping[str, Any],
    *,
    actor: str,
    reason: Reason,
    message: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    """Readdress an envelope this sidecar built (so well-formed) to x-sump, as it stands.

    The actor it was going to and the steps after it stay in route.next, behind x-sump
    (which runs none of them), so that a redrive knows where it was headed."""
    out = dict(fields)
    route = fields["route"]
    ahead = (route["curr"], *route.get("next", ())) if route["curr"] != names.SUMP else ()
    out["route"] = Route(tuple(route["prev"]), names.SUMP, ahead).to_json()
    out["status"] = status(
        fields.get("status"),
        phase=Phase.FAILED,
        actor=actor,
        now=now,
        reason=reason,
        error=wire.error_details(str(reason), message),
    )
    return out


def wrap_for_sump(
    body: bytes,
    invalid: Invalid,
    *,
    actor: str,
    new_id: str,
    headers: Mapping[str, Any],
    now: datetime.datetime,
    limit: int | None = None,
) -> dict[str, Any]:
    """An envelope for x-sump that carries the original bytes of unusable input.

    The bytes go in as text when they are UTF-8, else base64, so nothing is lost either way,
    unless the wrapper would exceed `limit` bytes: then the original is cut to fit and the
    payload says so (`truncated`, `original_size`), rather than being refused by the broker.
    """
    out = _sump_wrapper(body, invalid, actor=actor, new_id=new_id, headers=headers, now=now)
    if limit is None or len(encode(out)) <= limit:
        return out
    empty = _sump_wrapper(b"", invalid, actor=actor, new_id=new_id, headers=headers, now=now)
    # base64 grows 3 bytes to 4, and JSON may escape some characters: leave a margin.
    room = max(0, (limit - len(encode(empty)) - 512) * 3 // 4)
    out = _sump_wrapper(body[:room], invalid, actor=actor, new_id=new_id, headers=headers, now=now)
    out["payload"]["truncated"] = True
    out["payload"]["original_size"] = len(body)
    return out


def _sump_wrapper(
    body: bytes,
    invalid: Invalid,
    *,
    actor: str,
    new_id: str,
    headers: Mapping[str, Any],
    now: datetime.datetime,
) -> dict[str, Any]:
    try:
        original, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(body).decode("ascii"), "base64"
    fields = invalid.fields or {}
    keep_id = fields.get("id") if isinstance(fields.get("id"), str) and fields.get("id") else None
    return {
        "id": keep_id or new_id,
        "parent_id": None,
        "route": Route((actor,), names.SUMP, ()).to_json(),
        "headers": dict(headers),
        "status": status(
            None, phase=Phase.FAILED, actor=actor, now=now, reason=invalid.reason,
            error=wire.error_details(str(invalid.reason), invalid.message),
        ),
        "payload": {"original": original, "encoding": encoding},
    }  # fmt: skip
