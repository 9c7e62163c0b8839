"""A submission, from request body to envelope: pure checks and pure construction, no I/O.

`parse_submission` checks a `POST /v1/tasks` body and raises `ApiError` (400, or 404 for an
unknown flow) with a message that says what to change; `build_envelope` makes the envelope
that starts the task, addressed to the first actor of its route, and `build_task` the task
the gateway records for it. The task id is the envelope id: the client's `id` when it gave
one (an idempotency key), else a fresh uuid4.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asya_gateway.errors import ApiError
from asya_gateway.flows import Flow, PayloadInvalid, check_payload
from asya_gateway.tasks import Task, TaskStatus
from asya_shared import names, wire
from asya_shared.durations import parse_duration

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_TIMEOUT_S",
    "Submission",
    "build_envelope",
    "build_task",
    "check_submission",
    "encode",
    "new_task_id",
    "parse_submission",
    "queue_of",
    "timestamp",
]

MAX_ID_LENGTH = 200
# Ids travel in URL paths, queue messages, log lines and result-store keys: letters, digits
# and `._-` are safe in all of them without escaping.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A year: longer is surely a mistake, and far enough from datetime's limits.
MAX_TIMEOUT_S = 366 * 24 * 3600.0
_FIELDS = ("route", "flow", "payload", "headers", "timeout", "id")


@dataclass(frozen=True)
class Submission:
    """A checked `POST /v1/tasks` body."""

    route: tuple[str, ...]
    payload: Any
    id: str | None = None  # the client's idempotency key, if it gave one
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # seconds until the deadline (the request's, or the flow's)
    flow: str | None = None


def parse_submission(
    body: bytes, flows: Mapping[str, Flow], *, namespace: str, transport: str
) -> Submission:
    """Check a request body; ApiError naming the first problem found.

    `namespace` and `transport` decide the queue names, which must be ones the broker
    accepts: an actor whose queue name would be refused is refused here, by name.
    """
    return check_submission(_json(body), flows, namespace=namespace, transport=transport)


def check_submission(
    document: Any, flows: Mapping[str, Flow], *, namespace: str, transport: str
) -> Submission:
    """Check a request body already parsed from JSON, as parse_submission does."""
    if not isinstance(document, dict):
        raise _bad("invalid_request", "the body must be a JSON object with route or flow")
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise _bad(
            "invalid_request",
            f"unknown fields {', '.join(map(repr, unknown))}; a task has {', '.join(_FIELDS)}",
        )
    if "payload" not in document:
        raise _bad(
            "invalid_request", 'the body has no "payload"; send the handler\'s input as payload'
        )
    payload = document["payload"]
    has_route, has_flow = "route" in document, "flow" in document
    if has_route == has_flow:
        raise _bad(
            "invalid_request",
            'give exactly one of "route" (a list of actors) or "flow" (the name of a flow), '
            f"not {'both' if has_route else 'neither'}",
        )
    flow: Flow | None = None
    if has_flow:
        flow = _flow(document["flow"], flows)
        route = flow.route
        try:
            check_payload(flow, payload)
        except PayloadInvalid as exc:
            raise ApiError(400, "invalid_payload", str(exc), path=exc.path) from None
    else:
        route = _route(document["route"])
    for actor in route:
        queue_of(namespace, actor, transport)
    timeout = _timeout(document.get("timeout"))
    if timeout is None and flow is not None:
        timeout = flow.timeout
    return Submission(
        route=route,
        payload=payload,
        id=_id(document["id"]) if "id" in document else None,
        headers=_headers(document.get("headers")),
        timeout=timeout,
        flow=flow.name if flow else None,
    )


def queue_of(namespace: str, actor: str, transport: str) -> str:
    """The queue of `actor`; ApiError 400 naming the actor when the broker would refuse it."""
    try:
        return names.check_queue_name(names.queue_name(namespace, actor), transport)
    except names.InvalidName as exc:
        raise _bad(
            "invalid_actor", f"the route names actor {actor!r}, which is refused: {exc}"
        ) from None


def new_task_id() -> str:
    return str(uuid.uuid4())


def build_envelope(
    submission: Submission, *, task_id: str, now: datetime.datetime, traceparent: str
) -> dict[str, Any]:
    """The envelope that starts the task: at the first actor, pending, nothing visited.

    The status has the shape every sidecar writes (asya_shared.wire.Status), so the first
    actor reads a status like any other: phase pending, attempt 1, the deadline set from
    the timeout.
    """
    stamp = timestamp(now)
    deadline = None
    if submission.timeout is not None:
        deadline = timestamp(now + datetime.timedelta(seconds=submission.timeout))
    status: wire.Status = {
        "phase": "pending",
        "actor": submission.route[0],
        "attempt": 1,
        "max_attempts": 1,
        "created_at": stamp,
        "updated_at": stamp,
        "deadline_at": deadline,
        "reason": None,
        "error": None,
    }
    route: wire.Route = {
        "prev": [],
        "curr": submission.route[0],
        "next": list(submission.route[1:]),
    }
    return {
        "id": task_id,
        "parent_id": None,
        "route": route,
        # A caller's own trace context wins over the one started here.
        "headers": {"traceparent": traceparent, **submission.headers},
        "status": status,
        "payload": submission.payload,
    }


def build_task(submission: Submission, envelope: Mapping[str, Any], *, tenant: str) -> Task:
    """The task recorded for `envelope`, pending at its first actor."""
    route: wire.Route = envelope["route"]
    status: wire.Status = envelope["status"]
    return Task(
        id=envelope["id"],
        tenant=tenant,
        status=TaskStatus.PENDING,
        route={"prev": list(route["prev"]), "curr": route["curr"], "next": list(route["next"])},
        actor=route["curr"],
        progress=0.0,
        created_at=status["created_at"],
        updated_at=status["updated_at"],
        deadline_at=status["deadline_at"],
        flow=submission.flow,
        headers=dict(submission.headers),
    )


def encode(envelope: Mapping[str, Any]) -> bytes:
    """The envelope's bytes on the queue: compact UTF-8 JSON."""
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with microseconds: 2026-11-24T10:00:00.000000Z.

    Microseconds, not the sidecars' milliseconds: tasks are listed newest first by
    `created_at`, and two tasks submitted one after the other must not tie.
    """
    return moment.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------- checks


def _json(body: bytes) -> Any:
    if not body.strip():
        raise _bad("invalid_json", "the body is empty; send a JSON object with route or flow")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise _bad("invalid_json", f"the body is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON and no other reader accepts.
    raise ValueError(f"{name} is not a JSON value")


def _flow(name: Any, flows: Mapping[str, Flow]) -> Flow:
    if not isinstance(name, str) or not name:
        raise _bad("invalid_request", '"flow" must be the name of a flow (a string)')
    flow = flows.get(name)
    if flow is None:
        known = ", ".join(sorted(flows)) or "none: the gateway has no flows file"
        raise ApiError(404, "unknown_flow", f"no flow named {name!r}; known flows: {known}")
    return flow


def _route(route: Any) -> tuple[str, ...]:
    if not isinstance(route, list) or not all(isinstance(actor, str) for actor in route):
        raise _bad("invalid_route", '"route" must be a list of actor names, like ["a", "b"]')
    if not route:
        raise _bad("invalid_route", '"route" is empty; name at least one actor')
    return tuple(route)


def _timeout(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        seconds = parse_duration(raw)
    except (ValueError, TypeError):
        raise _bad(
            "invalid_timeout",
            f'"timeout" {raw!r} is not a duration; write seconds (30) or "30s", "5m", "1h"',
        ) from None
    if not 0 < seconds <= MAX_TIMEOUT_S or math.isinf(seconds):
        raise _bad(
            "invalid_timeout",
            f'"timeout" {raw!r} is out of range: more than 0, at most {MAX_TIMEOUT_S:.0f} '
            "seconds (a year)",
        )
    return seconds


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(key, str) and key and isinstance(value, str) for key, value in raw.items()
    ):
        raise _bad("invalid_headers", '"headers" must be an object of strings, like {"k": "v"}')
    return dict(raw)


def _id(raw: Any) -> str:
    if not isinstance(raw, str) or not _SAFE_ID.fullmatch(raw) or len(raw) > MAX_ID_LENGTH:
        raise _bad(
            "invalid_id",
            f'"id" {raw!r} is not usable: 1-{MAX_ID_LENGTH} letters, digits, ".", "_" or "-", '
            "starting with a letter or digit",
        )
    return raw


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)
