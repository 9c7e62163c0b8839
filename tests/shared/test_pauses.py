"""asya_shared.pauses: the pause spec, a person's input checked against it, and the merge."""

from __future__ import annotations

from typing import Any

import pytest

from asya_shared import pauses
from asya_shared.pauses import InvalidInput, PauseField, PauseSpec, PauseSpecError

REVIEW = {
    "prompt": "Approve the reply?",
    "fields": [
        {"name": "approved", "type": "boolean", "prompt": "OK to send?"},
        {"name": "reply", "payload_key": "/draft/text", "required": False},
        {"name": "score", "type": "number", "required": False},
    ],
}


def test_a_spec_fills_in_every_default() -> None:
    spec = pauses.parse_spec(REVIEW)

    assert spec.prompt == "Approve the reply?"
    assert spec.fields == (
        PauseField("approved", "boolean", "OK to send?", "/approved", True),
        PauseField("reply", "string", None, "/draft/text", False),
        PauseField("score", "number", None, "/score", False),
    )
    assert pauses.parse_spec(spec.to_json()) == spec  # to_json reads back as the same spec


def test_no_header_is_an_empty_spec() -> None:
    assert pauses.parse_spec(None) == PauseSpec()
    assert PauseSpec().to_json() == {"prompt": None, "fields": []}
    assert pauses.parse_spec({}) == PauseSpec()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("approve?", r"x-asya-pause must be an object"),
        ({"prompt": 3}, r"x-asya-pause\.prompt must be a string"),
        ({"fields": {}}, r"x-asya-pause\.fields must be a list"),
        ({"promt": "x"}, r"x-asya-pause\.promt is not a known key"),
        ({"fields": ["a"]}, r"x-asya-pause\.fields\[0\] must be an object"),
        ({"fields": [{"name": "ok"}, {"name": "x", "type": "bool"}]}, r"fields\[1\]\.type 'bool'"),
        ({"fields": [{"name": "my field"}]}, r"fields\[0\]\.name must be a name of letters"),
        ({"fields": [{"name": ""}]}, r"fields\[0\]\.name"),
        ({"fields": [{"type": "string"}]}, r"fields\[0\]\.name"),
        ({"fields": [{"name": "a"}, {"name": "a"}]}, r"fields\[1\]\.name 'a' is used twice"),
        ({"fields": [{"name": "a", "required": "yes"}]}, r"fields\[0\]\.required must be true"),
        ({"fields": [{"name": "a", "payload_key": "a"}]}, r"fields\[0\]\.payload_key: .*'/'"),
        ({"fields": [{"name": "a", "prompt": 1}]}, r"fields\[0\]\.prompt must be a string"),
        ({"fields": [{"name": "a", "default": 1}]}, r"fields\[0\]\.default is not a known key"),
    ],
)
def test_a_bad_spec_names_the_path_at_fault(raw: Any, says: str) -> None:
    with pytest.raises(PauseSpecError, match=says):
        pauses.parse_spec(raw)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, 99.0), (30, 30.0), (2.5, 2.5), ("45", 45.0), ("30m", 1800.0), ("1h30m", 5400.0),
     ("7d", 7 * 86400.0), ("0.5d", 43200.0)],
)  # fmt: skip
def test_a_pause_timeout_is_seconds_or_a_duration(raw: Any, seconds: float) -> None:
    assert pauses.pause_timeout(raw, 99.0) == seconds


@pytest.mark.parametrize("raw", [0, -5, "0s", "soon", "7 days", True, [1], {"s": 1}, "infd"])
def test_a_bad_pause_timeout_names_the_header(raw: Any) -> None:
    with pytest.raises(PauseSpecError, match="x-asya-pause-timeout"):
        pauses.pause_timeout(raw, 60.0)


SPEC = pauses.parse_spec(
    {
        "fields": [
            {"name": "approved", "type": "boolean"},
            {"name": "note", "required": False},
            {"name": "score", "type": "number", "required": False},
            {"name": "meta", "type": "object", "required": False},
            {"name": "tags", "type": "array", "required": False},
        ]
    }
)


def test_input_that_fits_passes() -> None:
    pauses.check_input(SPEC, {"approved": False})
    pauses.check_input(
        SPEC,
        {"approved": True, "note": "ok", "score": 3, "meta": {}, "tags": ["a"]},
    )
    pauses.check_input(SPEC, {"approved": True, "score": 2.5})  # a float is a number
    pauses.check_input(PauseSpec(), {})


@pytest.mark.parametrize(
    ("given", "field", "says"),
    [
        ({}, "input.approved", "input.approved is required"),
        ({"approved": "yes"}, "input.approved", "must be a boolean, not a string"),
        ({"approved": 1}, "input.approved", "must be a boolean, not a number"),
        ({"approved": True, "score": True}, "input.score", "must be a number, not a boolean"),
        ({"approved": True, "note": 5}, "input.note", "must be a string"),
        ({"approved": True, "meta": []}, "input.meta", "must be an object, not an array"),
        ({"approved": True, "tags": {}}, "input.tags", "must be an array, not an object"),
        ({"approved": True, "aproved": True}, "input.aproved", "does not ask for"),
        ([], "input", "must be an object"),
    ],
)
def test_input_that_does_not_fit_names_the_field(given: Any, field: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says) as raised:
        pauses.check_input(SPEC, given)
    assert raised.value.field == field


def test_merge_writes_each_given_field_at_its_payload_key() -> None:
    spec = pauses.parse_spec(REVIEW)
    payload = {"draft": {"text": "old", "lang": "en"}, "id": 1}

    merged = pauses.merge(payload, spec, {"approved": True, "reply": "new"})

    assert merged == {"draft": {"text": "new", "lang": "en"}, "id": 1, "approved": True}
    assert payload["draft"] == {"text": "old", "lang": "en"}  # the original is not changed
    assert pauses.merge(payload, spec, {}) == payload


def test_merge_refuses_to_write_through_something_not_an_object() -> None:
    spec = pauses.parse_spec({"fields": [{"name": "x", "payload_key": "/a/b"}]})
    with pytest.raises(ValueError, match="'/a' holds a string"):
        pauses.merge({"a": "text"}, spec, {"x": 1})
