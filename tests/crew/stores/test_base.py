"""stores/base.py: the key rules every store shares."""

from __future__ import annotations

import pytest

from asya_shared.stores import InvalidKey, StoreError, check_key


@pytest.mark.parametrize(
    "key", ["a.json", "A-b_c.1", "dir/a.json", "..json", "x" * 255, "d/" + "x" * 255]
)
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "letters, digits"),
        ("..", "would leave the store"),
        (".", "would leave the store"),
        ("../x", "would leave the store"),
        ("a/..", "would leave the store"),
        ("a/b/c", "more than one '/'"),
        ("/abs", "letters, digits"),
        ("a/", "letters, digits"),
        ("a//b", "more than one '/'"),
        ("a b", "letters, digits"),
        ("é.json", "letters, digits"),
        ("a\\b", "letters, digits"),
        ("a\x00b", "letters, digits"),
        ("x" * 256, "at most 255"),
    ],
)
def test_invalid_keys_are_refused_with_the_rule(key: str, why: str) -> None:
    with pytest.raises(InvalidKey, match=why) as info:
        check_key(key)
    assert repr(key) in str(info.value)
    # Callers may catch either the store error or a plain ValueError.
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value, ValueError)
