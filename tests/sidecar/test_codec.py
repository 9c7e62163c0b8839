"""codec.py: orjson's speed without orjson's stricter rules changing what Asya accepts."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asya_sidecar import codec

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def test_orjson_is_in_use_here() -> None:
    # The test extras install the `fast` extra; without it the fallbacks below prove nothing.
    assert codec.FAST


@given(JSON_VALUES)
def test_round_trips_agree_with_the_standard_library(value: Any) -> None:
    assert json.loads(codec.dumps(value)) == value
    assert codec.loads(json.dumps(value).encode()) == value


def test_text_is_utf8_not_escaped_and_compact() -> None:
    assert codec.dumps({"a": ["é", 1]}) == '{"a":["é",1]}'.encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"big": 123456789012345678901234567890}', {"big": 123456789012345678901234567890}),
        (b'{"u64": 18446744073709551615}', {"u64": 2**64 - 1}),
        (b'{"just over": 18446744073709551616}', {"just over": 2**64}),
        (b'{"negative": -9223372036854775809}', {"negative": -(2**63) - 1}),
        (b"[NaN]", None),  # accepted by json.loads: checked below with isnan
        ('{"utf16": "ok"}'.encode("utf-16"), {"utf16": "ok"}),
    ],
)
def test_what_the_standard_library_accepts_is_accepted(raw: bytes, expected: Any) -> None:
    found = codec.loads(raw)
    if expected is None:
        assert math.isnan(found[0])
    else:
        assert found == expected
        assert [type(v) for v in found.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("raw", [b"not json", b'{"a": ', b"\xff\xfe\xfa", b""])
def test_what_it_refuses_is_refused_with_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json.loads' own error types
        codec.loads(raw)


def test_values_orjson_refuses_are_written_as_json_would() -> None:
    assert codec.dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'
    assert codec.dumps({1: "int key"}) == b'{"1":"int key"}'


def test_unwritable_text_fails_as_it_would_without_orjson() -> None:
    with pytest.raises(UnicodeEncodeError):
        codec.dumps({"lone": "\ud800"})
