"""What x-join sends once a join is decided: the joined envelope, built from what the join
store holds. Pure: no I/O, no clock (the caller passes `now`).

    every part arrived and succeeded  -> the opener's payload with the results, in index
                                         order, at `into`; on along the opener's route
    some failed or never came, policy "partial"
                                      -> the same with null at those indexes and their list
                                         at the sibling key `missing`
    some failed or never came, policy "fail"
                                      -> to x-sink, phase failed, reason JoinIncomplete,
                                         naming the missing indexes and why parts failed
    too big for the transport         -> `oversize`: to x-sink, phase failed, OversizeResult

The joined envelope has the origin's id, so the task that fanned out is the task that goes
on; its headers are the opener's without the join's own header.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asya_crew.joinstore import Claimed
from asya_shared import joins, names, pointers, times

SUCCEEDED = "succeeded"
FAILED = "failed"
PENDING = "pending"
OVERSIZE = "OversizeResult"
INVALID_JOIN = "InvalidJoin"
# How many failed parts the JoinIncomplete message describes one by one.
MAX_DESCRIBED = 5


@dataclass(frozen=True)
class Emission:
    actor: str  # where it goes (x-sink when the route ended or the join failed)
    envelope: dict[str, Any]
    joined: int  # parts that arrived and succeeded
    missing: tuple[int, ...]  # indexes that failed or never came
    # The namespace of `actor`'s queue when it is a pipeline's actor and x-join runs in the
    # crew's namespace; None: x-join's own (the crew lives there).
    namespace: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.envelope["status"]["phase"] == FAILED)


def decide(claimed: Claimed, *, now: datetime.datetime) -> Emission:
    """The envelope to send for a claimed join (complete, or past its deadline); `into` and
    the policy come from the opener's x-asya-join-open header."""
    results: list[Any] = []
    missing: list[int] = []
    failures: dict[int, Mapping[str, Any]] = {}
    for index in range(claimed.count):
        part = claimed.parts.get(index)
        if part is not None and part.ok:
            results.append(json.loads(part.data))
            continue
        results.append(None)
        missing.append(index)
        if part is not None:
            failures[index] = _object(json.loads(part.data))
    opener = None if claimed.opener is None else _object(json.loads(claimed.opener))
    joined = claimed.count - len(missing)
    if not opener:
        return _orphaned(claimed, results, missing, now)
    try:
        level = joins.opened(_object(opener.get("headers")))
    except joins.InvalidJoin:
        level = None
    into = level.into if level else joins.DEFAULT_INTO
    policy = level.policy if level else joins.FAIL
    try:
        payload = _with_results(opener.get("payload"), into, results, missing)
    except pointers.InvalidPointer as exc:
        error = _error(INVALID_JOIN, f"cannot put the results of {claimed.origin!r}: {exc}")
        return _finished(opener, opener.get("payload"), error, joined, missing, now)
    if missing and policy != joins.PARTIAL:
        message = incomplete_message(claimed, missing, failures)
        error = _error(joins.JOIN_INCOMPLETE, message)
        return _finished(opener, payload, error, joined, missing, now)
    emission = _onward(opener, payload, joined, missing, now)
    if emission.actor in names.RESERVED:
        return emission
    raw = _object(_object(opener.get("headers")).get(joins.OPEN_HEADER))
    namespace = raw.get("namespace")
    return dataclasses.replace(emission, namespace=namespace if namespace else None)


def oversize(emission: Emission, *, size: int, limit: int, now: datetime.datetime) -> Emission:
    """The joined envelope did not fit the transport: fail it, without the results (which
    are what made it too big); the parts' results are in x-sink's records."""
    env = emission.envelope
    message = (
        f"the joined envelope of {env['id']!r} is {size} bytes; the transport accepts at most "
        f"{limit}. Join references instead of data: let each part store its result (in S3, "
        "say) and return the key (docs/patterns.md)"
    )
    opener = {**env, "route": _at_join(env["route"])}
    base = {"missing": list(emission.missing)} if emission.missing else {}
    return _finished(
        opener, base, _error(OVERSIZE, message), emission.joined, emission.missing, now
    )


def incomplete_message(
    claimed: Claimed, missing: list[int], failures: Mapping[int, Mapping[str, Any]]
) -> str:
    never = [i for i in missing if i not in failures]
    parts = [f"join of {claimed.origin!r}: {len(missing)} of {claimed.count} parts missing"]
    if never:
        parts.append(f"never arrived: {never} (the join waited until its deadline)")
    if failures:
        described = []
        for index in sorted(failures)[:MAX_DESCRIBED]:
            failure = failures[index]
            error = _object(failure.get("error"))
            what = error.get("type") or failure.get("reason") or "failed"
            text = f"{index} ({what}: {error.get('message', '')})".replace(": )", ")")
            described.append(text)
        more = len(failures) - len(described)
        tail = f" and {more} more" if more > 0 else ""
        parts.append("failed: " + ", ".join(described) + tail)
    parts.append("set policy 'partial' in the x-asya-join header to go on without them")
    return "; ".join(parts)


def _with_results(base: Any, into: str, results: list[Any], missing: list[int]) -> Any:
    tokens = pointers.parse(into)
    if not tokens:
        return results
    document = base if isinstance(base, dict) else ({} if base is None else {"input": base})
    document = pointers.put(document, tokens, results)
    if missing:
        document = pointers.put(document, (*tokens[:-1], "missing"), missing)
    return document


def _onward(
    opener: Mapping[str, Any],
    payload: Any,
    joined: int,
    missing: list[int],
    now: datetime.datetime,
) -> Emission:
    route = opener["route"]
    done = [*route["prev"], route["curr"]]
    following = list(route["next"])
    out = _base(opener, payload)
    if following:
        out["route"] = {"prev": done, "curr": following[0], "next": following[1:]}
        out["status"] = _status(opener, PENDING, following[0], now)
        return Emission(following[0], out, joined, tuple(missing))
    out["route"] = {"prev": done, "curr": names.SINK, "next": []}
    out["status"] = _status(opener, SUCCEEDED, names.JOIN, now)
    return Emission(names.SINK, out, joined, tuple(missing))


def _finished(
    opener: Mapping[str, Any],
    payload: Any,
    error: dict[str, Any],
    joined: int,
    missing: list[int] | tuple[int, ...],
    now: datetime.datetime,
) -> Emission:
    route = opener["route"]
    out = _base(opener, payload)
    out["route"] = {
        "prev": [*route["prev"], route["curr"]],
        "curr": names.SINK,
        "next": list(route["next"]),
    }
    out["status"] = _status(opener, FAILED, names.JOIN, now, reason=error["type"], error=error)
    return Emission(names.SINK, out, joined, tuple(missing))


def _orphaned(
    claimed: Claimed, results: list[Any], missing: list[int], now: datetime.datetime
) -> Emission:
    """The opener never came. It is sent with the parts, so this means parts came for a
    join x-join no longer remembers (redelivered after its tombstone was purged) or were
    forged: there is no route to go on with. The results go to x-sump, not x-sink, so that
    they can never overwrite the record of a task that did finish."""
    message = (
        f"join of {claimed.origin!r}: the message that carries the origin's payload and route "
        "never reached x-join; the parts' results are in this record's payload"
    )
    stub: dict[str, Any] = {
        "id": claimed.origin,
        "route": {"prev": [], "curr": names.JOIN, "next": []},
        "headers": {},
        "status": None,
    }
    payload = {"results": results, "missing": missing}
    error = _error(joins.JOIN_INCOMPLETE, message)
    failed = _finished(stub, payload, error, claimed.count - len(missing), missing, now)
    failed.envelope["route"]["curr"] = names.SUMP
    return dataclasses.replace(failed, actor=names.SUMP)


def _base(opener: Mapping[str, Any], payload: Any) -> dict[str, Any]:
    out = {k: v for k, v in opener.items() if k not in ("route", "status", "payload")}
    headers = opener.get("headers")
    out["headers"] = {
        k: v for k, v in (headers if isinstance(headers, dict) else {}).items()
        if k != joins.OPEN_HEADER
    }  # fmt: skip
    out["payload"] = payload
    return out


def _status(
    opener: Mapping[str, Any],
    phase: str,
    actor: str,
    now: datetime.datetime,
    *,
    reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    prior = _object(opener.get("status"))
    stamp = times.rfc3339(now)
    return {
        "phase": phase,
        "actor": actor,
        "attempt": 1,
        "max_attempts": 1,
        "created_at": prior.get("created_at") or stamp,
        "updated_at": stamp,
        "deadline_at": prior.get("deadline_at"),
        "reason": reason,
        "error": error,
    }


def _error(type_name: str, message: str) -> dict[str, Any]:
    return {"type": type_name, "mro": [type_name], "message": message, "traceback": None}


def _at_join(route: Mapping[str, Any]) -> dict[str, Any]:
    """The route an envelope had at x-join, from the route it was given to go on with."""
    prev = list(route["prev"])
    if route["curr"] == names.SINK:
        following = list(route["next"])
    else:
        following = [route["curr"], *route["next"]]
    return {"prev": prev[:-1], "curr": prev[-1] if prev else names.JOIN, "next": following}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
