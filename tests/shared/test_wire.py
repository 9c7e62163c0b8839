"""wire.py: the constructor and the parser of error details (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asya_shared import wire

KEYS = ["type", "mro", "message", "traceback"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def test_error_details_are_written_in_wire_order() -> None:
    details = wire.error_details("RuntimeCrashed", "gone")

    assert json.dumps(details) == (
        '{"type": "RuntimeCrashed", "mro": ["RuntimeCrashed"], "message": "gone", '
        '"traceback": null}'
    )


def test_error_details_keep_a_given_mro_and_traceback() -> None:
    details = wire.error_details(
        "ActorTimeout", "t", mro=("ActorTimeout", "TimeoutError"), traceback="T"
    )

    assert details == {
        "type": "ActorTimeout",
        "mro": ["ActorTimeout", "TimeoutError"],
        "message": "t",
        "traceback": "T",
    }


def test_details_from_the_runtime_pass_through_unchanged() -> None:
    raw = {"type": "a.E", "mro": ["a.E", "Exception"], "message": "m", "traceback": "T"}

    details = wire.error_details_from(raw)

    assert details == raw
    assert list(details) == KEYS
    assert details is not raw  # a copy: the parsed answer is not shared


def safe(type_: str, mro: list[str], message: str = "", traceback: str | None = None) -> Any:
    return {"type": type_, "mro": mro, "message": message, "traceback": traceback}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"type": "E"}, safe("E", ["E"])),
        ({"type": "E", "mro": []}, safe("E", ["E"])),
        ({"type": "E", "mro": "E"}, safe("E", ["E"])),
        ({"mro": [1, None, "X"]}, safe("", ["1", "", "X"])),
        ({"type": None, "message": None}, safe("", [""])),
        ({"type": 3, "message": 4.5, "traceback": False}, safe("3", ["3"], "4.5", "False")),
        ({"type": "E", "cause": "x"}, safe("E", ["E"])),
        ({}, safe("", [""])),
        (None, safe("", [""])),
        (["E"], safe("", [""])),
    ],
)
def test_odd_details_get_safe_values(raw: object, expected: wire.ErrorDetails) -> None:
    details = wire.error_details_from(raw)

    assert details == expected
    assert list(details) == KEYS


@pytest.mark.parametrize("seconds", [0, 2, 2.5, 86400])
def test_a_retry_after_in_seconds_is_kept_last(seconds: float) -> None:
    raw = {"type": "E", "mro": ["E"], "message": "", "traceback": None, "retry_after": seconds}

    details = wire.error_details_from(raw)

    assert details.get("retry_after") == seconds
    assert list(details) == [*KEYS, "retry_after"]


@pytest.mark.parametrize("odd", [-1, True, "5", None, float("inf"), float("nan"), [3]])
def test_a_retry_after_that_is_not_seconds_is_dropped(odd: object) -> None:
    details = wire.error_details_from({"type": "E", "retry_after": odd})

    assert "retry_after" not in details


@given(json_values)
def test_any_json_becomes_well_typed_details(raw: object) -> None:
    details = wire.error_details_from(raw)

    assert list(details) in (KEYS, [*KEYS, "retry_after"])
    assert isinstance(details["type"], str)
    assert details["mro"]
    assert all(isinstance(cls, str) for cls in details["mro"])
    assert isinstance(details["message"], str)
    assert details["traceback"] is None or isinstance(details["traceback"], str)
