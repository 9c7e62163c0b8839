"""JSON Pointers (RFC 6901) for the places a crew actor writes into a payload: where x-join
puts the joined results (`into`) and where a resume puts each field a person entered
(`payload_key`). Pure: no I/O.

Only what writing needs: `parse` checks a pointer once, `put` sets a value at it, creating
the objects on the way. Arrays are not indexed into: a person's input or a join's results
land under object keys, and a pointer that would need an index is refused when parsed.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["InvalidPointer", "format_pointer", "parse", "put"]


class InvalidPointer(ValueError):
    """Not a JSON Pointer we can write at; the message says why and shows a good one."""


def parse(pointer: object) -> tuple[str, ...]:
    """The reference tokens of `pointer` ("/a/b" -> ("a", "b")); "" is the whole document."""
    if not isinstance(pointer, str):
        raise InvalidPointer(f"{pointer!r} is not a JSON Pointer: use a string like '/results'")
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise InvalidPointer(
            f"{pointer!r} is not a JSON Pointer: it must start with '/' (for example '/{pointer}')"
        )
    tokens = tuple(_unescape(token) for token in pointer[1:].split("/"))
    if any(token == "" for token in tokens):
        raise InvalidPointer(f"{pointer!r} has an empty part: name each key, like '/a/b'")
    return tokens


def format_pointer(tokens: tuple[str, ...]) -> str:
    return "".join("/" + token.replace("~", "~0").replace("/", "~1") for token in tokens)


def put(document: Any, tokens: tuple[str, ...], value: Any) -> Any:
    """A copy of `document` with `value` at `tokens`; missing objects on the way are made.

    The document itself is never changed. With no tokens the value replaces the whole
    document. A part of the path that holds something other than an object is refused
    (InvalidPointer): overwriting a person's data silently would lose it.
    """
    if not tokens:
        return copy.deepcopy(value)
    root = copy.deepcopy(document) if isinstance(document, dict) else None
    if root is None:
        raise InvalidPointer(
            f"cannot write at {format_pointer(tokens)!r}: the payload is "
            f"{_kind(document)}, not an object"
        )
    node = root
    for depth, token in enumerate(tokens[:-1]):
        child = node.get(token)
        if child is None:
            child = node[token] = {}
        elif not isinstance(child, dict):
            where = format_pointer(tokens[: depth + 1])
            raise InvalidPointer(
                f"cannot write at {format_pointer(tokens)!r}: {where!r} holds "
                f"{_kind(child)}, not an object"
            )
        node = child
    node[tokens[-1]] = copy.deepcopy(value)
    return root


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
