"""asya_shared.records: the stored form of an envelope and its key (pure functions)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from asya_shared import records
from asya_shared.stores import check_key

HASHED = re.compile(r"^(?P<safe>[A-Za-z0-9._-]*)-(?P<hash>[0-9a-f]{12})\.json$")

FIELDS = {
    "id": "e-1",
    "parent_id": "e-0",
    "route": {"prev": ["a"], "curr": "x-sink", "next": []},
    "headers": {"tenant": "t1"},
    "status": {"phase": "succeeded", "actor": "a"},
}


def test_build_keeps_every_field_and_the_payload() -> None:
    built = records.build(FIELDS, {"answer": 42})
    assert dict(built) == {**FIELDS, "payload": {"answer": 42}}
    assert list(built) == [*records.FIELDS, "payload"]


def test_build_fills_missing_fields_with_null() -> None:
    assert records.build({"id": "e-1"}, None) == {
        "id": "e-1",
        "parent_id": None,
        "route": None,
        "headers": None,
        "status": None,
        "payload": None,
    }


@pytest.mark.parametrize(
    "payload",
    [{"text": "héllo wörld ✓"}, ["日本語", 1, 2.5, None, True], "plain", 0, None],
    ids=["object", "list", "string", "number", "null"],
)
def test_encode_is_utf8_json_that_reads_back(payload: Any) -> None:
    built = records.build(FIELDS, payload)
    data = records.encode(built)
    assert json.loads(data.decode("utf-8")) == built


def test_encode_keeps_non_ascii_text_as_is() -> None:
    data = records.encode(records.build(FIELDS, {"text": "héllo"}))
    assert "héllo".encode() in data
    assert b"\\u00e9" not in data


def test_encode_survives_a_lone_surrogate() -> None:
    # json.loads accepts "\ud800", so such a payload can reach the crew.
    payload = json.loads('{"text": "bad \\ud800 half"}')
    data = records.encode(records.build(FIELDS, payload))
    assert json.loads(data)["payload"] == payload


def test_encode_keeps_nan_rather_than_failing_forever() -> None:
    data = records.encode(records.build(FIELDS, {"score": math.nan}))
    assert math.isnan(json.loads(data)["payload"]["score"])


@pytest.mark.parametrize(
    "envelope_id", ["abc", "7f9c1e0a-3b7d-4c59-9a0e-2d2f1c8b6a41", "A.b_c-1", "env-1-2"]
)
def test_key_of_a_safe_id_is_the_id(envelope_id: str) -> None:
    assert records.key(envelope_id) == f"{envelope_id}.json"


@pytest.mark.parametrize(
    ("envelope_id", "safe_part"),
    [
        ("a/b", "a_b"),
        ("a b", "a_b"),
        ("../../etc/passwd", "_._.._etc_passwd"),
        ("héllo", "h_llo"),
        ("tenant:42", "tenant_42"),
        ("", ""),
        (".", "_"),
        ("..", "_."),
        (".hidden", "_hidden"),
        (42, "42"),
        (None, "null"),
    ],
)
def test_key_of_an_unsafe_id_is_mapped_and_hashed(envelope_id: Any, safe_part: str) -> None:
    key = records.key(envelope_id)
    match = HASHED.match(key)
    assert match, key
    assert match["safe"] == safe_part
    assert check_key(key) == key


@pytest.mark.parametrize(
    "look_alikes",
    [
        ("a/b", "a_b", "a:b", "a b"),
        ("é", "è", "_"),
        (".x", "_x"),
        (42, "42"),
        ("x" * 300, "x" * 300 + "y", "x" * 200),
    ],
)
def test_ids_that_map_alike_get_different_keys(look_alikes: tuple[Any, ...]) -> None:
    keys = [records.key(envelope_id) for envelope_id in look_alikes]
    assert len(set(keys)) == len(keys), keys


def test_long_ids_are_cut_to_a_valid_file_name() -> None:
    key = records.key("x" * 5000)
    assert len(key) <= 255
    assert HASHED.match(key)
    assert check_key(key) == key


def test_key_is_deterministic() -> None:
    # A redelivered envelope must overwrite its own record, not add a second one.
    assert records.key("a/b") == records.key("a/b")
