"""asya_shared.joins and asya_shared.pointers: the pure parts of fan-in."""

from __future__ import annotations

from typing import Any

import pytest

from asya_shared import joins, pointers


@pytest.mark.parametrize(
    ("ahead", "depth", "expected"),
    [
        (["summarize", "x-join", "combine"], 0, 1),
        (["summarize", "combine"], 0, None),
        (["x-join"], 1, None),  # the one x-join ahead belongs to the open level
        (["sub", "work", "x-join", "x-join", "combine"], 0, 3),  # outermost: the last
        (["work", "x-join", "x-join", "combine"], 1, 1),  # inner: the first
        ([], 0, None),
    ],
)
def test_closing_join_picks_the_last_unclaimed_xjoin(
    ahead: list[str], depth: int, expected: int | None
) -> None:
    assert joins.closing_join(ahead, depth) == expected


def test_options_default_and_parse_durations() -> None:
    assert joins.parse_options(None) == joins.Options("/results", 600.0, "fail")
    parsed = joins.parse_options({"into": "", "timeout": "1h30m", "policy": "partial"})
    assert parsed == joins.Options("", 5400.0, "partial")


def test_levels_round_trip_and_refuse_a_bad_index() -> None:
    level = joins.Level("t1", 2, 3, "/results", "fail", "2026-12-07T12:00:00Z")
    assert joins.levels({joins.PART_HEADER: [level.to_json()]}) == [level]
    assert joins.levels({}) == []
    bad = {**level.to_json(), "index": 3}
    with pytest.raises(joins.InvalidJoin, match=r"x-asya-join-part\[0\]\.index"):
        joins.levels({joins.PART_HEADER: [bad]})
    with pytest.raises(joins.InvalidJoin, match="must be a list"):
        joins.levels({joins.PART_HEADER: level.to_json()})
    with pytest.raises(joins.InvalidJoin, match="count"):
        joins.levels({joins.PART_HEADER: [{**level.to_json(), "count": True}]})


def test_opened_reads_the_opener_header() -> None:
    level = joins.Level("t1", -1, 3, "/results", "partial", "2026-12-07T12:00:00Z")
    assert joins.opened({joins.OPEN_HEADER: level.opener_header()}) == level
    assert joins.opened({}) is None


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [("", ()), ("/a", ("a",)), ("/a/b", ("a", "b")), ("/a~1b/c~0d", ("a/b", "c~d"))],
)
def test_pointer_parse(pointer: str, tokens: tuple[str, ...]) -> None:
    assert pointers.parse(pointer) == tokens
    assert pointers.format_pointer(tokens) == pointer


@pytest.mark.parametrize(
    ("pointer", "words"), [("a", "start with '/'"), ("/a//b", "empty part"), (3, "string")]
)
def test_pointer_parse_refuses_clearly(pointer: Any, words: str) -> None:
    with pytest.raises(pointers.InvalidPointer, match=words):
        pointers.parse(pointer)


def test_put_makes_objects_on_the_way_and_leaves_the_input_alone() -> None:
    doc = {"keep": 1, "a": {"x": 2}}
    out = pointers.put(doc, ("a", "b", "c"), [1])
    assert out == {"keep": 1, "a": {"x": 2, "b": {"c": [1]}}}
    assert doc == {"keep": 1, "a": {"x": 2}}
    assert pointers.put(doc, (), "all") == "all"


@pytest.mark.parametrize(
    ("doc", "tokens", "words"),
    [
        ({"a": [1]}, ("a", "b"), "'/a' holds an array"),
        ("text", ("a",), "the payload is a string"),
        ({"a": 3}, ("a", "b"), "'/a' holds a number"),
    ],
)
def test_put_refuses_to_write_through_a_non_object(
    doc: Any, tokens: tuple[str, ...], words: str
) -> None:
    with pytest.raises(pointers.InvalidPointer, match=words):
        pointers.put(doc, tokens, 1)
