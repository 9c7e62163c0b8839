"""The internal report batch, checked: what `POST /internal/v1/reports` accepts (pure).

    {"reports": [HopReport, ...], "canceled_cursor": <int, optional, default 0>}

Each report must have the shape of asya_shared.wire.HopReport; the first one that does not
fails the whole batch with 400 and a message naming it (`reports[3].route.next`). A batch
is all or nothing so a sender never has to guess which of its reports were kept. Error
details are normalised with `wire.error_details_from`, so a store never holds a half-formed
error object. Keys this gateway does not know are dropped, not refused: a newer sidecar's
reports still move tasks here.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from asya_gateway.errors import ApiError
from asya_shared import wire

__all__ = ["MAX_BATCH", "parse_batch"]

# Far more than a sidecar sends in one interval; a batch beyond this is a bug upstream.
MAX_BATCH = 10_000


def parse_batch(body: bytes) -> tuple[list[wire.HopReport], int]:
    """The reports of a batch and the sender's canceled cursor; ApiError 400 otherwise."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"the batch is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("reports"), list):
        raise _bad('the batch must be an object {"reports": [...], "canceled_cursor": <int>}')
    cursor = document.get("canceled_cursor", 0)
    if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
        raise _bad(f"canceled_cursor must be an integer >= 0, not {cursor!r}")
    raw_reports = document["reports"]
    if len(raw_reports) > MAX_BATCH:
        raise ApiError(
            413,
            "batch_too_large",
            f"the batch has {len(raw_reports)} reports; send at most {MAX_BATCH} at a time",
        )
    return [_report(raw, f"reports[{index}]") for index, raw in enumerate(raw_reports)], cursor


def _report(raw: Any, where: str) -> wire.HopReport:
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object")
    for key in ("id", "actor"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise _bad(f"{where}.{key} must be a non-empty string")
    event = raw.get("event")
    if event not in wire.REPORT_EVENTS:
        raise _bad(
            f"{where}.event {event!r} is not a report event; one of {', '.join(wire.REPORT_EVENTS)}"
        )
    parent_id = raw.get("parent_id")
    if parent_id is not None and not isinstance(parent_id, str):
        raise _bad(f"{where}.parent_id must be a string or null")
    attempt = raw.get("attempt")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise _bad(f"{where}.attempt must be an integer >= 1, not {attempt!r}")
    at = raw.get("at")
    if not isinstance(at, str) or not _is_timestamp(at):
        raise _bad(f"{where}.at must be an RFC 3339 timestamp, not {at!r}")
    reason = raw.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise _bad(f"{where}.reason must be a string or null")
    error = raw.get("error")
    if error is not None and not isinstance(error, dict):
        raise _bad(f"{where}.error must be an object or null")
    events = raw.get("events")
    if event == "fly" and not isinstance(events, list):
        raise _bad(f"{where}.events must be the list of FLY events of a fly report")
    progress = _progress(raw.get("progress"), f"{where}.progress") if event == "joining" else None
    redriven_at = raw.get("redriven_at")
    if redriven_at is not None and (
        not isinstance(redriven_at, str) or not _is_timestamp(redriven_at)
    ):
        raise _bad(f"{where}.redriven_at must be an RFC 3339 timestamp, not {redriven_at!r}")
    report: wire.HopReport = {
        "id": raw["id"],
        "parent_id": parent_id,
        "actor": raw["actor"],
        "event": event,
        "route": _route(raw.get("route"), f"{where}.route"),
        "attempt": attempt,
        "at": at,
    }
    if "reason" in raw:
        report["reason"] = reason
    if "error" in raw:
        report["error"] = None if error is None else wire.error_details_from(error)
    if "result" in raw:
        report["result"] = raw["result"]
    if events is not None:
        report["events"] = events
    if progress is not None:
        report["progress"] = progress
    if redriven_at is not None:
        report["redriven_at"] = redriven_at
    return report


def _progress(raw: Any, where: str) -> dict[str, int]:
    """A joining report's {"done", "total"}: whole numbers, 0 <= done <= total, total >= 1."""
    if isinstance(raw, dict):
        done, total = raw.get("done"), raw.get("total")
        if type(done) is int and type(total) is int and 0 <= done <= total and total >= 1:
            return {"done": done, "total": total}
    raise _bad(
        f'{where} must be {{"done": <parts arrived>, "total": <parts awaited>}} with '
        f"0 <= done <= total and total >= 1, not {raw!r}"
    )


def _route(raw: Any, where: str) -> wire.Route:
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object {{prev, curr, next}}")
    if not isinstance(raw.get("curr"), str):
        raise _bad(f"{where}.curr must be an actor name")
    for key in ("prev", "next"):
        value = raw.get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _bad(f"{where}.{key} must be a list of actor names")
    return {"prev": list(raw["prev"]), "curr": raw["curr"], "next": list(raw["next"])}


def _is_timestamp(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_batch", message)
