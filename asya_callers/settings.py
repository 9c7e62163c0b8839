"""Reading a caller's environment: every mistake is a ConfigError naming the variable.

A caller reads its settings once, when the runtime builds its class, so a wrong value stops
the actor at start with a message, not at the first envelope.
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Mapping
from typing import Any

from asya_callers.errors import ConfigError
from asya_shared.durations import parse_duration

__all__ = ["Settings", "redact_url", "template_fields"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Settings:
    """The variables of one caller, all named `<prefix><NAME>` (e.g. ASYA_OPENAI_MODEL)."""

    def __init__(self, prefix: str, environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self.environ = os.environ if environ is None else environ

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.environ.get(self.name(key), "").strip()
        return value or default

    def required(self, key: str, meaning: str) -> str:
        value = self.text(key)
        if value is None:
            raise ConfigError(f"{self.name(key)} is required: {meaning}")
        return value

    def url(self, key: str, meaning: str) -> str:
        value = self.required(key, meaning)
        if not value.startswith(("http://", "https://")):
            raise ConfigError(
                f"{self.name(key)}={redact_url(value)!r} is not an http:// or https:// URL: "
                f"{meaning}"
            )
        return value.rstrip("/")

    def number(self, key: str, default: float | None, *, minimum: float = 0.0) -> float | None:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{self.name(key)}={raw!r} is not a number") from None
        if not math.isfinite(value) or value < minimum:
            raise ConfigError(f"{self.name(key)}={raw!r} must be a number >= {minimum:g}")
        return value

    def integer(self, key: str, default: int | None, *, minimum: int = 1) -> int | None:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{self.name(key)}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{self.name(key)}={raw!r} must be at least {minimum}")
        return value

    def duration(self, key: str, default: float) -> float:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            raise ConfigError(
                f"{self.name(key)}={raw!r} is not a duration: give seconds (30) or a "
                f"duration like 30s, 2m ({exc})"
            ) from None
        if seconds <= 0:
            raise ConfigError(f"{self.name(key)}={raw!r} must be longer than zero")
        return seconds

    def flag(self, key: str, default: bool) -> bool:
        raw = self.text(key)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{self.name(key)}={raw!r} is not a boolean: use true or false")

    def json(self, key: str) -> Any:
        raw = self.text(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{self.name(key)} is not valid JSON: {exc}") from None

    def template(self, key: str) -> str | None:
        """A `str.format` template, checked for syntax now rather than at the first call."""
        value = self.environ.get(self.name(key))
        if not value:
            return None
        try:
            template_fields(value)
        except ValueError as exc:
            raise ConfigError(
                f"{self.name(key)} is not a valid str.format template: {exc} (write literal "
                "braces as {{ and }})"
            ) from None
        return value


def template_fields(template: str) -> list[str]:
    """The payload fields a template reads: `{name}`, `{name[key]}` and `{name.attr}` give name."""
    fields = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        if not field or field.isdigit():
            raise ValueError("positional fields such as {} or {0} cannot name a payload field")
        fields.append(field.split("[", 1)[0].split(".", 1)[0])
    return fields


def redact_url(url: str) -> str:
    """The URL without user:password@, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{path}"
