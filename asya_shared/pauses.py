"""What a pause asks of a person, and what a person's answer does to the payload (pure).

A handler (or the submitter) puts the pause's spec in the `x-asya-pause` header:

    {"prompt": "Approve the reply?",
     "fields": [{"name": "approved", "type": "boolean", "prompt": "OK to send?",
                 "payload_key": "/review/approved", "required": true}]}

`type` is one of string | boolean | number | object | array (default string), `required`
defaults to true and `payload_key` (a JSON Pointer) to `/<name>`. No header: no prompt and
no fields, and a resume takes `{"input": {}}`. `x-asya-pause-timeout` says how long the
pause may last: seconds, or a duration such as "30m" or "7d".

x-pause (asya_crew) parses the spec with `parse_spec` before it stores anything, so a bad
spec fails the task at once with a message naming the path at fault; the gateway checks a
person's input with `check_input` and writes it into the payload with `merge`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asya_shared import pointers
from asya_shared.durations import parse_duration

__all__ = [
    "FIELD_TYPES",
    "PAUSE_HEADER",
    "PAUSE_TIMEOUT_HEADER",
    "InvalidInput",
    "PauseField",
    "PauseSpec",
    "PauseSpecError",
    "check_input",
    "merge",
    "parse_spec",
    "pause_timeout",
]

PAUSE_HEADER = "x-asya-pause"
PAUSE_TIMEOUT_HEADER = "x-asya-pause-timeout"
FIELD_TYPES = ("string", "boolean", "number", "object", "array")
_FIELD_KEYS = ("name", "type", "prompt", "payload_key", "required")
_SPEC_KEYS = ("prompt", "fields")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class PauseSpecError(ValueError):
    """The pause header (or its timeout) is not usable; the message names the path."""


class InvalidInput(ValueError):
    """A person's input does not fit the pause's fields; `.field` is "input.<name>" (or
    "input" for the input as a whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PauseField:
    name: str
    type: str = "string"
    prompt: str | None = None
    payload_key: str = ""  # a JSON Pointer; "/<name>" when the header gave none
    required: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "prompt": self.prompt,
            "payload_key": self.payload_key,
            "required": self.required,
        }


@dataclass(frozen=True)
class PauseSpec:
    prompt: str | None = None
    fields: tuple[PauseField, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The spec with every default filled in (what `parse_spec` reads back as equal)."""
        return {"prompt": self.prompt, "fields": [field.to_json() for field in self.fields]}


def parse_spec(raw: object) -> PauseSpec:
    """The spec in an `x-asya-pause` header value (None: no header, an empty spec);
    PauseSpecError naming the path at fault (`x-asya-pause.fields[1].type`)."""
    if raw is None:
        return PauseSpec()
    where = PAUSE_HEADER
    if not isinstance(raw, dict):
        raise PauseSpecError(
            f'{where} must be an object {{"prompt": "...", "fields": [...]}}, not {_kind(raw)}'
        )
    _refuse_unknown(raw, _SPEC_KEYS, where)
    prompt = raw.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise PauseSpecError(f"{where}.prompt must be a string, not {_kind(prompt)}")
    fields_raw = raw.get("fields", [])
    if fields_raw is None:
        fields_raw = []
    if not isinstance(fields_raw, list):
        raise PauseSpecError(f"{where}.fields must be a list of fields, not {_kind(fields_raw)}")
    fields: list[PauseField] = []
    seen: set[str] = set()
    for index, item in enumerate(fields_raw):
        field = _field(item, f"{where}.fields[{index}]")
        if field.name in seen:
            raise PauseSpecError(
                f"{where}.fields[{index}].name {field.name!r} is used twice; give each field "
                "its own name"
            )
        seen.add(field.name)
        fields.append(field)
    return PauseSpec(prompt=prompt, fields=tuple(fields))


def _field(raw: object, where: str) -> PauseField:
    if not isinstance(raw, dict):
        raise PauseSpecError(
            f'{where} must be an object {{"name": ..., "type": ...}}, not {_kind(raw)}'
        )
    _refuse_unknown(raw, _FIELD_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PauseSpecError(
            f"{where}.name must be a name of letters, digits and _ (like 'approved'), not {name!r}"
        )
    kind = raw.get("type", "string")
    if kind not in FIELD_TYPES:
        raise PauseSpecError(
            f"{where}.type {kind!r} is not a type; one of {', '.join(FIELD_TYPES)}"
        )
    prompt = raw.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise PauseSpecError(f"{where}.prompt must be a string, not {_kind(prompt)}")
    required = raw.get("required", True)
    if not isinstance(required, bool):
        raise PauseSpecError(f"{where}.required must be true or false, not {required!r}")
    payload_key = raw.get("payload_key", f"/{name}")
    try:
        pointers.parse(payload_key)
    except pointers.InvalidPointer as exc:
        raise PauseSpecError(f"{where}.payload_key: {exc}") from None
    assert isinstance(payload_key, str)  # pointers.parse accepted it
    return PauseField(
        name=name, type=str(kind), prompt=prompt, payload_key=payload_key, required=required
    )


def pause_timeout(raw: object, default_s: float) -> float:
    """Seconds a pause may last: `raw` (the `x-asya-pause-timeout` header: seconds, or a
    duration like "30m" / "7d") or `default_s` when it is absent (None)."""
    if raw is None:
        return default_s
    where = PAUSE_TIMEOUT_HEADER
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise PauseSpecError(
            f"{where} must be seconds (a number) or a duration like '30m' or '7d', not {_kind(raw)}"
        )
    seconds: float
    if isinstance(raw, str) and raw.strip().endswith("d") and _is_number(raw.strip()[:-1]):
        seconds = float(raw.strip()[:-1]) * 86400.0
    else:
        try:
            seconds = parse_duration(raw)
        except ValueError:
            raise PauseSpecError(
                f"{where} {raw!r} is not a duration; write seconds (3600) or a duration like "
                "'30m', '12h' or '7d'"
            ) from None
    if not seconds > 0 or math.isinf(seconds) or math.isnan(seconds):
        raise PauseSpecError(f"{where} {raw!r} must be more than 0 seconds and finite")
    return seconds


def check_input(spec: PauseSpec, input: object) -> None:
    """Raise InvalidInput when `input` does not fit the spec's fields: not an object, a
    key that is no field (a typo must not vanish silently), a required field missing, or a
    value of the wrong type (a boolean is not a number)."""
    if not isinstance(input, dict):
        raise InvalidInput("input", f"input must be an object of field values, not {_kind(input)}")
    known = {field.name: field for field in spec.fields}
    unknown = sorted(key for key in input if key not in known)
    if unknown:
        expected = ", ".join(known) or "none: this pause asks for nothing, send {}"
        raise InvalidInput(
            f"input.{unknown[0]}",
            f"input has {', '.join(f'input.{key}' for key in unknown)}, which this pause does "
            f"not ask for; its fields: {expected}",
        )
    for field in spec.fields:
        where = f"input.{field.name}"
        if field.name not in input:
            if field.required:
                raise InvalidInput(
                    where, f"{where} is required ({field.type}): {field.prompt or 'give it'}"
                )
            continue
        value = input[field.name]
        if not _has_type(value, field.type):
            raise InvalidInput(where, f"{where} must be {_article(field.type)}, not {_kind(value)}")


def merge(payload: Any, spec: PauseSpec, input: Mapping[str, Any]) -> Any:
    """A copy of `payload` with each given field's value at its payload_key, in field order
    (InvalidPointer when a key would have to write through something not an object)."""
    for field in spec.fields:
        if field.name in input:
            payload = pointers.put(payload, pointers.parse(field.payload_key), input[field.name])
    return payload


def _has_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, list)


def _refuse_unknown(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in raw if key not in allowed)
    if unknown:
        raise PauseSpecError(
            f"{where}.{unknown[0]} is not a known key; {where} may have {', '.join(allowed)}"
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
