"""envelope.py: parsing, frame checks and route advancement (pure)."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest

from asya_shared import wire
from asya_sidecar import envelope
from asya_sidecar.envelope import Envelope, Frame, Invalid, Phase, Reason

NOW = datetime.datetime(2026, 11, 24, 12, 0, 0, 123000, tzinfo=datetime.UTC)
STAMP = "2026-11-24T12:00:00.123Z"


def make(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": "e1",
        "route": {"prev": ["prep"], "curr": "infer", "next": ["post", "store"]},
        "headers": {"tenant": "acme"},
        "status": {
            "phase": "pending",
            "created_at": "2026-01-01T00:00:00Z",
            "deadline_at": "2026-12-31T00:00:00Z",
            "attempt": 1,
            "max_attempts": 1,
        },
        "payload": {"text": "hi"},
        "x-custom": {"kept": True},
    }
    fields.update(overrides)
    return fields


def parsed(**overrides: Any) -> Envelope:
    result = envelope.parse(json.dumps(make(**overrides)).encode(), actor="infer")
    assert isinstance(result, Envelope)
    return result


def test_parse_keeps_every_field() -> None:
    env = parsed()

    assert env.id == "e1"
    assert env.route == envelope.Route(("prep",), "infer", ("post", "store"))
    assert env.fields["x-custom"] == {"kept": True}
    assert env.payload == {"text": "hi"}


def test_prev_and_next_may_be_omitted() -> None:
    env = parsed(route={"curr": "infer"})

    assert env.route == envelope.Route((), "infer", ())


@pytest.mark.parametrize(
    ("body", "reason", "fragment"),
    [
        (b"{nope", Reason.PARSE_ERROR, "not valid JSON"),
        (b"\xff\xfe", Reason.PARSE_ERROR, "not valid JSON"),
        (b"[]", Reason.PARSE_ERROR, "not an array"),
        (b'"text"', Reason.PARSE_ERROR, "not a string"),
        (json.dumps({"route": {"curr": "infer"}, "payload": 1}).encode(), Reason.PARSE_ERROR, "id"),
        (json.dumps(make(id="")).encode(), Reason.PARSE_ERROR, "id must be"),
        (json.dumps(make(id=7)).encode(), Reason.PARSE_ERROR, "id must be"),
        (json.dumps(make(parent_id=3)).encode(), Reason.PARSE_ERROR, "parent_id"),
        (
            json.dumps({k: v for k, v in make().items() if k != "payload"}).encode(),
            Reason.PARSE_ERROR,
            "payload",
        ),
        (json.dumps(make(route=["infer"])).encode(), Reason.PARSE_ERROR, "route must be"),
        (json.dumps(make(route={"next": []})).encode(), Reason.PARSE_ERROR, "route.curr"),
        (
            json.dumps(make(route={"curr": "infer", "next": "post"})).encode(),
            Reason.PARSE_ERROR,
            "route.next",
        ),
        (
            json.dumps(make(route={"curr": "infer", "next": ["Bad Name"]})).encode(),
            Reason.PARSE_ERROR,
            "'Bad Name'",
        ),
        (json.dumps(make(headers="x")).encode(), Reason.PARSE_ERROR, "headers must be"),
        (json.dumps(make(status=[])).encode(), Reason.PARSE_ERROR, "status must be"),
        (
            json.dumps(make(route={"curr": "other"})).encode(),
            Reason.WRONG_ACTOR,
            "route.curr is 'other' but this actor is 'infer'",
        ),
    ],
)
def test_unusable_input_is_invalid_with_a_reason(
    body: bytes, reason: Reason, fragment: str
) -> None:
    result = envelope.parse(body, actor="infer")

    assert isinstance(result, Invalid)
    assert result.reason == reason
    assert fragment in result.message


def test_frame_that_keeps_prev_and_curr_is_accepted() -> None:
    env = parsed()
    raw = {
        "payload": 1,
        "route": {"prev": ["prep"], "curr": "infer", "next": ["review"]},
        "headers": {"a": 1},
    }

    assert envelope.check_frame(env, raw) == Frame(1, ("review",), {"a": 1})


@pytest.mark.parametrize(
    ("route", "reason", "fragment"),
    [
        ({"prev": [], "curr": "infer", "next": []}, Reason.ROUTE_VIOLATION, "route.prev"),
        (
            {"prev": ["prep", "x"], "curr": "infer", "next": []},
            Reason.ROUTE_VIOLATION,
            "route.prev",
        ),
        (
            {"prev": ["prep"], "curr": "forged", "next": []},
            Reason.ROUTE_VIOLATION,
            "route.curr from 'infer' to 'forged'",
        ),
        ({"prev": ["prep"], "curr": "infer", "next": "post"}, Reason.ROUTE_VIOLATION, "route.next"),
        ({"prev": ["prep"], "curr": "infer", "next": ["UPPER"]}, Reason.ROUTE_VIOLATION, "'UPPER'"),
        ("flat", Reason.ROUTE_VIOLATION, "must be an object"),
    ],
)
def test_frame_that_rewrites_history_is_refused(route: Any, reason: Reason, fragment: str) -> None:
    result = envelope.check_frame(parsed(), {"payload": 1, "route": route})

    assert isinstance(result, Invalid)
    assert result.reason == reason
    assert fragment in result.message


@pytest.mark.parametrize("raw", [None, [], {"route": {}}, {"payload": 1, "headers": []}])
def test_malformed_frame_is_an_invalid_result(raw: Any) -> None:
    result = envelope.check_frame(parsed(), raw)

    assert isinstance(result, Invalid)
    assert result.reason == Reason.INVALID_RESULT


def test_forward_advances_the_route_and_marks_pending_for_the_next_actor() -> None:
    env = parsed()
    frame = Frame({"out": 1}, ("post", "store"), {"tenant": "acme", "new": "h"})

    destination, out = envelope.forward(env, frame, index=0, headers=frame.headers, now=NOW)

    assert destination == "post"
    assert out["route"] == {"prev": ["prep", "infer"], "curr": "post", "next": ["store"]}
    assert out["id"] == "e1"
    assert out["payload"] == {"out": 1}
    assert out["headers"] == {"tenant": "acme", "new": "h"}
    assert out["x-custom"] == {"kept": True}
    assert out["status"]["phase"] == "pending"
    assert out["status"]["actor"] == "post"
    assert out["status"]["created_at"] == "2026-01-01T00:00:00Z"
    assert out["status"]["deadline_at"] == "2026-12-31T00:00:00Z"
    assert out["status"]["updated_at"] == STAMP


def test_forward_with_nothing_left_finishes_at_the_sink() -> None:
    destination, out = envelope.forward(
        parsed(), Frame("done", (), {}), index=0, headers={}, now=NOW
    )

    assert destination == "x-sink"
    assert out["route"] == {"prev": ["prep", "infer"], "curr": "x-sink", "next": []}
    assert out["status"]["phase"] == "succeeded"
    assert out["status"]["actor"] == "infer"


@pytest.mark.parametrize(
    ("index", "expected_id", "parent"), [(0, "e1", None), (1, "e1-1", "e1"), (12, "e1-12", "e1")]
)
def test_fan_out_ids(index: int, expected_id: str, parent: str | None) -> None:
    _, out = envelope.forward(
        parsed(), Frame(index, ("post",), {}), index=index, headers={}, now=NOW
    )

    assert out["id"] == expected_id
    assert out.get("parent_id") == parent


def test_forward_keeping_status_leaves_it_untouched() -> None:
    env = parsed(
        status={"phase": "failed", "reason": "RuntimeError"},
        route={"prev": ["a"], "curr": "infer", "next": []},
    )

    destination, out = envelope.forward(
        env, Frame(1, ("x-sump",), {}), index=0, headers={}, now=NOW, keep_status=True
    )

    assert destination == "x-sump"
    assert out["status"] == {"phase": "failed", "reason": "RuntimeError"}


def test_a_retry_status_is_written_with_every_key_in_wire_order() -> None:
    out = envelope.retry(
        parsed(),
        attempt=2,
        max_attempts=3,
        retrying_since=NOW,
        headers={},
        now=NOW,
        reason=Reason.HANDLER_ERROR,
        error=wire.error_details("E", "m", mro=["E", "Exception"]),
    )

    assert envelope.encode(out["status"]) == envelope.encode({
        "phase": "retrying", "actor": "infer", "attempt": 2, "max_attempts": 3,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": STAMP,
        "deadline_at": "2026-12-31T00:00:00Z", "reason": "HandlerError",
        "error": {"type": "E", "mro": ["E", "Exception"], "message": "m", "traceback": None},
        "retry_since": STAMP,
    })  # fmt: skip
    assert list(out["status"]) == [*wire.Status.__annotations__]


def test_a_fresh_status_has_nulls_where_nothing_is_known() -> None:
    fresh = envelope.status(None, phase=Phase.PENDING, actor="prep", now=NOW)

    assert fresh == {
        "phase": "pending", "actor": "prep", "attempt": 1, "max_attempts": 1,
        "created_at": STAMP, "updated_at": STAMP, "deadline_at": None, "reason": None,
        "error": None,
    }  # fmt: skip


def test_finish_failed_keeps_the_steps_not_taken_and_the_error() -> None:
    error = wire.error_details("ValueError", "bad", traceback="T")

    out = envelope.finish(
        parsed(),
        phase=Phase.FAILED,
        headers={"h": 1},
        now=NOW,
        reason=Reason.HANDLER_ERROR,
        error=error,
    )

    assert out["route"] == {"prev": ["prep", "infer"], "curr": "x-sink", "next": ["post", "store"]}
    assert out["status"]["phase"] == "failed"
    assert out["status"]["reason"] == "HandlerError"
    assert out["status"]["error"] == error
    assert out["status"]["actor"] == "infer"
    assert out["payload"] == {"text": "hi"}


@pytest.mark.parametrize(
    ("body", "encoding"), [(b'{"not": "an envelope"}', "utf-8"), (b"\xff\x00\x9c", "base64")]
)
def test_wrap_for_sump_keeps_the_original_bytes(body: bytes, encoding: str) -> None:
    invalid = Invalid(Reason.PARSE_ERROR, "missing fields")

    out = envelope.wrap_for_sump(body, invalid, actor="infer", new_id="new-1", headers={}, now=NOW)

    assert out["id"] == "new-1"
    assert out["route"] == {"prev": ["infer"], "curr": "x-sump", "next": []}
    assert out["status"]["phase"] == "failed"
    assert out["status"]["reason"] == "ParseError"
    assert out["status"]["error"]["message"] == "missing fields"
    assert out["payload"]["encoding"] == encoding
    original = out["payload"]["original"]
    decoded = base64.b64decode(original) if encoding == "base64" else original.encode()
    assert decoded == body


def test_wrap_for_sump_keeps_the_id_of_a_parsed_envelope() -> None:
    invalid = Invalid(Reason.WRONG_ACTOR, "wrong", make())

    out = envelope.wrap_for_sump(b"{}", invalid, actor="infer", new_id="n", headers={}, now=NOW)

    assert out["id"] == "e1"
    assert out["status"]["reason"] == "WrongActor"


def test_encode_writes_utf8_not_escapes() -> None:
    assert envelope.encode({"t": "日本"}) == '{"t":"日本"}'.encode()


@pytest.mark.parametrize("body", [b"x" * 50_000, bytes(range(256)) * 200])
def test_a_sump_wrapper_over_the_limit_carries_a_marked_prefix_of_the_original(
    body: bytes,
) -> None:
    invalid = Invalid(Reason.OVERSIZE_RESULT, "too large")

    out = envelope.wrap_for_sump(
        body, invalid, actor="a", new_id="n", headers={}, now=NOW, limit=10_000
    )

    assert len(envelope.encode(out)) <= 10_000
    payload = out["payload"]
    assert payload["truncated"] is True
    assert payload["original_size"] == len(body)
    kept = (
        base64.b64decode(payload["original"])
        if payload["encoding"] == "base64"
        else payload["original"].encode()
    )
    assert body.startswith(kept)
    assert len(kept) > 5_000


def test_a_sump_wrapper_within_the_limit_is_whole() -> None:
    out = envelope.wrap_for_sump(
        b"small",
        Invalid(Reason.PARSE_ERROR, "m"),
        actor="a",
        new_id="n",
        headers={},
        now=NOW,
        limit=10_000,
    )

    assert out["payload"] == {"original": "small", "encoding": "utf-8"}
