"""asya_shared.redrive: what `asya sump ls` shows and what `asya redrive` sends, for every shape
of sump record. The records are built by the sidecar's own functions (finish, forward,
wrap_for_sump, to_sump) and x-sink's record, as they reach x-sump."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest

from asya_crew import sink
from asya_shared import records, redrive, wire
from asya_shared.redrive import Filters, Redrive, Refused
from asya_sidecar import envelope as env_mod
from asya_sidecar.envelope import Frame, Invalid, Phase, Reason

FAILED_AT = datetime.datetime(2026, 12, 1, 10, 0, 0, tzinfo=datetime.UTC)
NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def incoming(actor: str = "infer", **extra: Any) -> dict[str, Any]:
    """An envelope on its way to `actor`, after prep, with two steps left after it."""
    fields: dict[str, Any] = {
        "id": "env-1",
        "parent_id": "origin-7",
        "route": {"prev": ["prep"], "curr": actor, "next": ["post", "store"]},
        "headers": {"traceparent": TRACE, "x-tenant": "acme"},
        "status": {
            "phase": "retrying", "actor": actor, "attempt": 3, "max_attempts": 3,
            "created_at": "2026-12-01T09:59:00.000Z", "updated_at": "2026-12-01T09:59:59.000Z",
            "deadline_at": "2026-12-01T10:05:00.000Z", "reason": "RuntimeError", "error": None,
            "retry_since": "2026-12-01T09:59:30.000Z",
        },
        "payload": {"text": "héllo"},
    }  # fmt: skip
    fields.update(extra)
    return fields


def parsed(fields: dict[str, Any]) -> env_mod.Envelope:
    result = env_mod.parse(env_mod.encode(fields), actor=fields["route"]["curr"])
    assert isinstance(result, env_mod.Envelope), result
    return result


def as_stored(fields: dict[str, Any]) -> dict[str, Any]:
    """What x-sump stores of the envelope it received (x-sump's record, via JSON)."""
    stored = records.build({name: fields.get(name) for name in records.FIELDS}, fields["payload"])
    loaded: dict[str, Any] = json.loads(records.encode(stored))
    return loaded


def via_sink(actor: str = "infer", reason: Reason = Reason.POLICY_EXHAUSTED) -> dict[str, Any]:
    """A handler failure: the sidecar's `finish` to x-sink, then x-sink's frame to x-sump."""
    at_actor = parsed(incoming(actor))
    error = wire.error_details("BadInput", "cannot handle it\nsecond line")
    failed = env_mod.finish(at_actor, phase=Phase.FAILED, headers=at_actor.headers,
                            now=FAILED_AT, reason=reason, error=error)  # fmt: skip
    at_sink = parsed(failed)
    remaining = sink.remaining_steps(failed["route"])
    frame = Frame(at_sink.payload, ("x-sump", *remaining), at_sink.headers)
    to, forwarded = env_mod.forward(at_sink, frame, index=0, headers=at_sink.headers,
                                    now=FAILED_AT, keep_status=True)  # fmt: skip
    assert to == "x-sump"
    return as_stored(forwarded)


def wrapped(body: bytes, reason: Reason, actor: str = "infer", **kwargs: Any) -> dict[str, Any]:
    """Unusable input or result: the sidecar's `reject` wrapping the original bytes."""
    fields = None
    try:
        loaded = json.loads(body)
        fields = loaded if isinstance(loaded, dict) else None
    except ValueError:
        pass
    sump = env_mod.wrap_for_sump(body, Invalid(reason, "what went wrong", fields), actor=actor,
                                 new_id="new-id", headers={"traceparent": TRACE}, now=FAILED_AT,
                                 **kwargs)  # fmt: skip
    return as_stored(sump)


def redriven(item: dict[str, Any]) -> Redrive:
    step = redrive.plan(item, now=NOW)
    assert isinstance(step, Redrive), step
    return step


def refused(item: dict[str, Any]) -> str:
    step = redrive.plan(item, now=NOW)
    assert isinstance(step, Refused), step
    return step.why


# ------------------------------------------------------------------------------ redrivable


def test_the_sump_record_of_a_handler_failure_keeps_the_steps_not_run() -> None:
    item = via_sink()
    assert item["route"] == {
        "prev": ["prep", "infer", "x-sink"],
        "curr": "x-sump",
        "next": ["post", "store"],
    }


def test_a_handler_failure_goes_back_to_the_actor_with_the_rest_of_its_route() -> None:
    item = via_sink()
    step = redriven(item)
    assert step.to == "infer"
    out = step.envelope
    assert out["id"] == "env-1"
    assert out["parent_id"] == "origin-7"
    assert out["payload"] == {"text": "héllo"}
    assert out["route"] == {"prev": ["prep"], "curr": "infer", "next": ["post", "store"]}
    assert out["status"] == {
        "phase": "pending", "actor": "infer", "attempt": 1, "max_attempts": 1,
        "created_at": "2026-12-01T12:00:00.000Z", "updated_at": "2026-12-01T12:00:00.000Z",
        "deadline_at": None, "reason": None, "error": None,
    }  # fmt: skip
    assert out["headers"] == {
        "traceparent": TRACE,
        "x-tenant": "acme",
        "redriven-from": {
            "actor": "infer",
            "reason": "PolicyExhausted",
            "failed_at": "2026-12-01T10:00:00.000Z",
            "redriven_at": "2026-12-01T12:00:00.000Z",
            "attempt": 3,
        },
    }
    # The sidecar takes it as a fresh envelope for the actor: attempt 1, no deadline.
    again = parsed(out)
    assert again.attempt == 1
    assert again.deadline is None


def test_a_record_from_before_the_route_was_kept_goes_back_with_no_steps_after() -> None:
    item = via_sink()
    item["route"]["next"] = []  # x-sink used to drop them
    assert redriven(item).envelope["route"] == {"prev": ["prep"], "curr": "infer", "next": []}


def test_a_second_redrive_replaces_the_redriven_from_header() -> None:
    item = via_sink()
    item["headers"]["redriven-from"] = {"actor": "infer", "attempt": 1}
    header = redriven(item).envelope["headers"]["redriven-from"]
    assert header["redriven_at"] == "2026-12-01T12:00:00.000Z"
    assert header["attempt"] == 3


@pytest.mark.parametrize(
    "reason", [Reason.INVALID_RESULT, Reason.ROUTE_VIOLATION, Reason.OVERSIZE_RESULT]
)
def test_input_whose_result_was_unusable_goes_back_as_it_came(reason: Reason) -> None:
    original = incoming()
    item = wrapped(env_mod.encode(original), reason)
    step = redriven(item)
    assert step.to == "infer"
    out = step.envelope
    assert out["id"] == "env-1"
    assert out["parent_id"] == "origin-7"
    assert out["route"] == original["route"]
    assert out["payload"] == original["payload"]
    assert out["headers"]["x-tenant"] == "acme"
    assert out["headers"]["redriven-from"]["reason"] == str(reason)
    assert out["status"]["attempt"] == 1
    assert out["status"]["deadline_at"] is None


def test_a_base64_original_is_decoded() -> None:
    item = wrapped(env_mod.encode(incoming()), Reason.INVALID_RESULT)
    item["payload"] = {
        "original": base64.b64encode(env_mod.encode(incoming())).decode(),
        "encoding": "base64",
    }
    assert redriven(item).envelope["payload"] == {"text": "héllo"}


# -------------------------------------------------------------------------------- refused


def test_unparsable_input_is_refused() -> None:
    assert "ParseError" in refused(wrapped(b"{not json", Reason.PARSE_ERROR))


def test_input_for_another_actor_is_refused() -> None:
    item = wrapped(env_mod.encode(incoming("other")), Reason.WRONG_ACTOR)
    assert "WrongActor" in refused(item)


def test_a_result_for_an_actor_with_no_queue_goes_where_it_was_headed() -> None:
    at_actor = incoming()
    output = {**at_actor, "route": {"prev": ["prep", "infer"], "curr": "ghost", "next": ["post"]}}
    sump = env_mod.to_sump(output, actor="infer", reason=Reason.UNKNOWN_ACTOR,
                           message="no queue for actor 'ghost'", now=FAILED_AT)  # fmt: skip

    planned = redriven(as_stored(sump))

    assert planned.to == "ghost"
    assert planned.envelope["route"] == {
        "prev": ["prep", "infer"], "curr": "ghost", "next": ["post"]
    }  # fmt: skip
    assert planned.envelope["payload"] == at_actor["payload"]
    assert planned.envelope["headers"]["redriven-from"]["actor"] == "infer"
    assert planned.envelope["headers"]["redriven-from"]["reason"] == "UnknownActor"


def test_a_result_for_an_actor_with_no_queue_from_an_older_record_is_refused() -> None:
    at_actor = incoming()
    old = {**at_actor, "route": {"prev": ["prep", "infer"], "curr": "x-sump", "next": []}}
    old["status"] = {**at_actor["status"], "phase": "failed", "actor": "infer",
                     "reason": "UnknownActor"}  # fmt: skip
    assert "does not say which" in refused(as_stored(old))


def test_a_truncated_original_is_refused() -> None:
    body = env_mod.encode(incoming(payload={"text": "x" * 5000}))
    item = wrapped(body, Reason.OVERSIZE_RESULT, limit=2000)
    assert item["payload"]["truncated"] is True
    assert "cut to fit" in refused(item)


def test_a_non_utf8_original_is_refused() -> None:
    item = wrapped(b"\xff\xfe{}", Reason.INVALID_RESULT)
    assert item["payload"]["encoding"] == "base64"
    assert "not UTF-8" in refused(item)


@pytest.mark.parametrize(
    ("original", "why"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b"not json", "not valid JSON"),
        (json.dumps({"id": "e", "payload": 1}).encode(), "not an envelope addressed to infer"),
        (
            json.dumps({"route": {"prev": [], "curr": "infer", "next": []}}).encode(),
            "no id or no payload",
        ),
    ],
)
def test_an_original_that_is_no_envelope_for_the_actor_is_refused(
    original: bytes, why: str
) -> None:
    assert why in refused(wrapped(original, Reason.INVALID_RESULT))


def test_a_wrapper_without_its_original_is_refused() -> None:
    item = wrapped(env_mod.encode(incoming()), Reason.INVALID_RESULT)
    item["payload"] = {"text": "something else"}
    assert "does not carry the original" in refused(item)


@pytest.mark.parametrize("crew", ["x-join", "x-pause", "x-sink", "x-sump"])
def test_a_failure_at_a_crew_actor_is_refused(crew: str) -> None:
    item = via_sink()
    item["status"]["actor"] = crew
    assert f"crew actor {crew}" in refused(item)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"route": None}, "no route"),
        ({"route": {"prev": ["a"], "next": []}}, "no route"),
        ({"route": {"prev": ["a", "x-sink"], "curr": "x-sump", "next": ["Bad_Name"]}}, "no route"),
        ({"route": {"prev": ["prep", "x-sink"], "curr": "x-sump", "next": []}}, "does not end"),
        ({"route": {"prev": ["prep", "infer"], "curr": "x-sump", "next": []}}, "does not end"),
        ({"status": None}, "names no actor"),
        ({"status": {"phase": "failed", "actor": ""}}, "names no actor"),
        ({"id": None}, "no id"),
    ],
)
def test_a_record_of_another_shape_is_refused(change: dict[str, Any], why: str) -> None:
    item = {**via_sink(), **change}
    assert why in refused(item)


def test_a_record_without_payload_is_refused() -> None:
    item = via_sink()
    del item["payload"]
    assert "no payload" in refused(item)


# ---------------------------------------------------------------------------------- listing


def test_summary_of_a_handler_failure() -> None:
    summary = redrive.summarize(via_sink())
    assert summary.to_json() == {
        "id": "env-1",
        "actor": "infer",
        "reason": "PolicyExhausted",
        "attempt": 3,
        "failed_at": "2026-12-01T10:00:00.000Z",
        "error": "BadInput: cannot handle it",
        "route": {"prev": ["prep", "infer", "x-sink"], "curr": "x-sump", "next": ["post", "store"]},
    }


def test_summary_of_a_record_with_nothing_readable() -> None:
    summary = redrive.summarize({"status": "broken", "id": 7})
    assert summary.to_json() == {
        "id": "", "actor": "", "reason": "", "attempt": None, "failed_at": "", "error": "",
        "route": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("error", "line"),
    [
        ({"type": "E", "message": "one\ntwo"}, "E: one"),
        ({"type": "E", "message": ""}, "E"),
        ({"message": "only a message"}, "only a message"),
        ({}, ""),
        (None, ""),
        ("text", ""),
    ],
)
def test_error_line(error: Any, line: str) -> None:
    assert redrive.error_line(error) == line


def test_cut_keeps_short_text_and_marks_a_cut() -> None:
    assert redrive.cut("short", 10) == "short"
    assert redrive.cut("x" * 20, 10) == "x" * 9 + "…"


def summary(envelope_id: str, actor: str, reason: str, failed_at: str) -> redrive.Summary:
    return redrive.Summary(envelope_id, actor, reason, 1, failed_at, "", None)


def test_filters_match_actor_reason_and_time() -> None:
    row = summary("e", "infer", "Timeout", "2026-12-01T10:00:00.000Z")
    assert redrive.matches(row, Filters())
    assert redrive.matches(row, Filters(actor="infer", reason="Timeout"))
    assert not redrive.matches(row, Filters(actor="prep"))
    assert not redrive.matches(row, Filters(reason="RuntimeError"))
    assert redrive.matches(row, Filters(since=FAILED_AT))
    assert not redrive.matches(row, Filters(since=FAILED_AT + datetime.timedelta(seconds=1)))
    undated = summary("e", "infer", "Timeout", "")
    assert not redrive.matches(undated, Filters(since=FAILED_AT))


def test_a_reason_filter_finds_records_written_under_the_reasons_old_name() -> None:
    old = summary("old", "infer", "RuntimeError", "2026-12-01T10:00:00.000Z")
    new = summary("new", "infer", "HandlerError", "2026-12-01T10:00:00.000Z")
    for name in ("HandlerError", "RuntimeError"):
        assert redrive.matches(old, Filters(reason=name))
        assert redrive.matches(new, Filters(reason=name))


def test_newest_first_with_undated_last_and_ties_by_id() -> None:
    rows = [
        summary("b", "a", "r", "2026-12-01T10:00:00Z"),
        summary("undated", "a", "r", ""),
        summary("a", "a", "r", "2026-12-01T10:00:00Z"),
        summary("newest", "a", "r", "2026-12-01T11:00:00+01:00"),  # 10:00Z: a tie
        summary("latest", "a", "r", "2026-12-02T00:00:00Z"),
    ]
    assert [row.id for row in redrive.newest_first(rows)] == [
        "latest", "a", "b", "newest", "undated"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - datetime.timedelta(minutes=30)),
        ("2h", NOW - datetime.timedelta(hours=2)),
        ("1d", NOW - datetime.timedelta(days=1)),
        ("1.5d", NOW - datetime.timedelta(hours=36)),
        ("90", NOW - datetime.timedelta(seconds=90)),
        ("2026-12-01T10:00:00Z", FAILED_AT),
        ("2026-12-01T11:00:00+01:00", FAILED_AT),
    ],
)
def test_parse_since(text: str, expected: datetime.datetime) -> None:
    assert redrive.parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01T00:00:00Z", "-5m", "d"])
def test_parse_since_refuses_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        redrive.parse_since(text, now=NOW)
