"""Pauses in the gateway, decided without I/O: what x-pause's `POST /internal/v1/pauses`
and a person's `POST /v1/tasks/<id>/resume` send, checked, and the envelopes a pause ends
with (the continuation, or the record x-sink gets when it expires or is canceled).

The gateway keeps the envelope x-pause received (route.curr = x-pause) in the task's row
while it is paused: no queue or worker holds it. A resume builds the continuation from it:

- the person's input, checked against the pause's fields, merged into the payload at each
  field's payload_key (asya_shared.pauses);
- the route advanced past x-pause (prev += [x-pause], curr = next[0]; an empty next ends
  the task: to x-sink, phase succeeded);
- `status.deadline_at` shifted by the time spent paused: a task's own deadline does not
  run while it waits for a person;
- the two pause headers dropped, so a later x-pause in the route asks afresh.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asya_gateway.errors import ApiError
from asya_shared import names, pauses, pointers, times, wire

__all__ = [
    "EXPIRED",
    "PauseRequest",
    "continuation",
    "encode",
    "expired_error",
    "parse_pause_request",
    "parse_resume_body",
    "seconds_between",
    "shift",
    "spec_of",
    "to_sink",
]

EXPIRED = "PauseExpired"
_ENVELOPE_KEYS = ("id", "route", "payload")


@dataclass(frozen=True)
class PauseRequest:
    """A checked `POST /internal/v1/pauses` body."""

    envelope: dict[str, Any]  # as x-pause received it
    route: wire.Route
    attempt: int
    pause: dict[str, Any]  # {"prompt", "fields", "paused_at", "expires_at"}: the task shows it

    @property
    def task_id(self) -> str:
        task_id: str = self.envelope["id"]
        return task_id

    @property
    def expires_at(self) -> str:
        expires_at: str = self.pause["expires_at"]
        return expires_at


def parse_pause_request(body: bytes) -> PauseRequest:
    """The pause x-pause sent; ApiError 400 naming the first problem."""
    document = _json_object(body, "the pause")
    envelope = document.get("envelope")
    if not isinstance(envelope, dict):
        raise _bad("invalid_pause", "envelope must be the envelope x-pause received (an object)")
    for key in _ENVELOPE_KEYS:
        if key not in envelope:
            raise _bad("invalid_pause", f"envelope.{key} is missing; send the whole envelope")
    if not isinstance(envelope["id"], str) or not envelope["id"]:
        raise _bad("invalid_pause", "envelope.id must be a non-empty string")
    route = _route(envelope["route"])
    status = envelope.get("status")
    attempt = status.get("attempt", 1) if isinstance(status, dict) else 1
    if type(attempt) is not int or attempt < 1:
        attempt = 1
    try:
        spec = pauses.parse_spec(document.get("pause"))
    except pauses.PauseSpecError as exc:
        raise _bad("invalid_pause", f"pause: {exc}") from None
    paused_at = _time(document.get("paused_at"), "paused_at")
    expires_at = _time(document.get("expires_at"), "expires_at")
    if expires_at <= paused_at:
        raise _bad(
            "invalid_pause",
            f"expires_at {document['expires_at']!r} must be after paused_at "
            f"{document['paused_at']!r}",
        )
    shown = {
        **spec.to_json(),
        "paused_at": document["paused_at"],
        "expires_at": document["expires_at"],
    }
    return PauseRequest(envelope=envelope, route=route, attempt=attempt, pause=shown)


def parse_resume_body(body: bytes) -> dict[str, Any]:
    """The `input` of a `POST /v1/tasks/<id>/resume` body; ApiError 400 otherwise. Whether
    the input fits the pause is checked against the stored pause (`continuation`)."""
    document = _json_object(body, "the body", empty_ok=True)
    unknown = sorted(key for key in document if key != "input")
    if unknown:
        raise _bad(
            "invalid_request",
            f'unknown fields {", ".join(map(repr, unknown))}; send {{"input": {{...}}}}',
        )
    raw = document.get("input", {})
    if not isinstance(raw, dict):
        raise ApiError(
            400,
            "invalid_input",
            'input must be an object of the pause\'s field values, like {"approved": true}',
            path="input",
        )
    return raw


def spec_of(pause: Mapping[str, Any]) -> pauses.PauseSpec:
    """The spec of a stored pause (its prompt and fields)."""
    return pauses.parse_spec({"prompt": pause.get("prompt"), "fields": pause.get("fields", [])})


def continuation(
    held: Mapping[str, Any], pause: Mapping[str, Any], input: Mapping[str, Any], *, now: str
) -> dict[str, Any]:
    """The envelope a resume sends on (module docstring). InvalidInput when `input` does
    not fit the pause's fields, or a payload_key cannot be written in this payload."""
    spec = spec_of(pause)
    pauses.check_input(spec, input)
    try:
        payload = pauses.merge(held.get("payload"), spec, input)
    except pointers.InvalidPointer as exc:
        field = next((f.name for f in spec.fields if f.name in input), "")
        raise pauses.InvalidInput(f"input.{field}" if field else "input", str(exc)) from None
    route = _as_route(held["route"])
    prev = [*route["prev"], route["curr"]]
    ends = not route["next"]
    after: wire.Route = {
        "prev": prev,
        "curr": names.SINK if ends else route["next"][0],
        "next": [] if ends else list(route["next"][1:]),
    }
    status = dict(held.get("status") or {})
    paused_for = seconds_between(str(pause["paused_at"]), now)
    deadline = shift(status.get("deadline_at"), paused_for)
    out = dict(held)
    out["route"] = after
    out["payload"] = payload
    out["headers"] = {
        key: value
        for key, value in (held.get("headers") or {}).items()
        if key not in (pauses.PAUSE_HEADER, pauses.PAUSE_TIMEOUT_HEADER)
    }
    out["status"] = {
        "phase": "succeeded" if ends else "pending",
        # Finished: the status names the actor that finished it, as a sidecar's does.
        "actor": route["curr"] if ends else after["curr"],
        "attempt": 1,
        "max_attempts": 1,
        "created_at": status.get("created_at") or now,
        "updated_at": now,
        "deadline_at": deadline,
        "reason": None,
        "error": None,
    }
    return out


def to_sink(
    held: Mapping[str, Any],
    *,
    phase: str,
    reason: str,
    error: wire.ErrorDetails | None,
    now: str,
) -> dict[str, Any]:
    """The paused envelope as x-sink records an ending (expired: failed; canceled): the
    route done up to x-pause, the rest left in next to show what was not done."""
    route = _as_route(held["route"])
    status = dict(held.get("status") or {})
    out = dict(held)
    out["route"] = {
        "prev": [*route["prev"], route["curr"]],
        "curr": names.SINK,
        "next": list(route["next"]),
    }
    out["status"] = {
        "phase": phase,
        "actor": route["curr"],
        "attempt": status.get("attempt", 1),
        "max_attempts": status.get("max_attempts", 1),
        "created_at": status.get("created_at") or now,
        "updated_at": now,
        "deadline_at": status.get("deadline_at"),
        "reason": reason,
        "error": error,
    }
    return out


def expired_error(pause: Mapping[str, Any]) -> wire.ErrorDetails:
    paused_at, expires_at = str(pause.get("paused_at")), str(pause.get("expires_at"))
    limit = seconds_between(paused_at, expires_at)
    return wire.error_details(
        EXPIRED,
        f"paused since {paused_at}, waited longer than its limit ({_human(limit)}, until "
        f"{expires_at}) for a resume; resume paused tasks sooner, or give the pause more time "
        f"with the {pauses.PAUSE_TIMEOUT_HEADER} header (or x-pause's ASYA_PAUSE_TIMEOUT)",
    )


def shift(deadline: Any, seconds: float) -> str | None:
    """`deadline` (RFC 3339 or None) moved `seconds` later, in the gateway's time format."""
    if not isinstance(deadline, str):
        return None
    moment = _parse(deadline)
    if moment is None:
        return deadline
    moved = moment + datetime.timedelta(seconds=max(seconds, 0.0))
    return times.rfc3339(moved, timespec="microseconds")


def encode(envelope: Mapping[str, Any]) -> str:
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))


# ----------------------------------------------------------------------------- helpers


def seconds_between(start: str, end: str) -> float:
    first, last = _parse(start), _parse(end)
    if first is None or last is None:
        return 0.0
    return (last - first).total_seconds()


def _parse(text: str) -> datetime.datetime | None:
    try:
        return times.parse_rfc3339(text)
    except ValueError:
        return None


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _json_object(body: bytes, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    if empty_ok and not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _bad("invalid_json", f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _bad("invalid_json", f"{what} must be a JSON object")
    return document


def _route(raw: Any) -> wire.Route:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("curr"), str)
        or not all(
            isinstance(raw.get(key), list) and all(isinstance(item, str) for item in raw[key])
            for key in ("prev", "next")
        )
    ):
        raise _bad(
            "invalid_pause",
            "envelope.route must be {prev: [actors], curr: actor, next: [actors]}",
        )
    return _as_route(raw)


def _as_route(raw: Mapping[str, Any]) -> wire.Route:
    return {"prev": list(raw["prev"]), "curr": str(raw["curr"]), "next": list(raw["next"])}


def _time(raw: Any, key: str) -> datetime.datetime:
    moment = _parse(raw) if isinstance(raw, str) else None
    if moment is None:
        raise _bad("invalid_pause", f"{key} must be an RFC 3339 time, not {raw!r}")
    return moment


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)
