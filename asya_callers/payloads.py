"""Reading a caller's inputs from a payload and writing its outputs back.

Every caller takes named fields of the payload and returns the payload with its results
added, so it slots into a pipeline without glue: what other actors put there travels on.
"""

from __future__ import annotations

from typing import Any

from asya_callers.errors import InvalidInput
from asya_callers.settings import template_fields

__all__ = ["fill_template", "require_field", "require_object"]


def require_object(payload: Any, caller: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput(
            f"{caller} needs a JSON object payload, got {type(payload).__name__}; wrap the "
            'value in an object, e.g. {"prompt": ...}'
        )
    return payload


def require_field(payload: dict[str, Any], field: str, caller: str, meaning: str) -> Any:
    if field not in payload:
        raise InvalidInput(
            f"{caller}: the payload has no field {field!r} ({meaning}); it has {_listing(payload)}"
        )
    return payload[field]


def fill_template(template: str, payload: dict[str, Any], variable: str) -> str:
    """`template.format(**payload)`, with a missing field named in the error."""
    missing = [name for name in template_fields(template) if name not in payload]
    if missing:
        raise InvalidInput(
            f"{variable} reads payload field(s) {', '.join(repr(m) for m in missing)}, which "
            f"this payload lacks; it has {_listing(payload)}"
        )
    try:
        return template.format_map(payload)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"{variable} could not be filled from this payload: {type(exc).__name__}: {exc}"
        ) from None


def _listing(payload: dict[str, Any]) -> str:
    if not payload:
        return "no fields"
    keys = sorted(map(str, payload))
    shown = ", ".join(repr(k) for k in keys[:20])
    return f"fields {shown}" + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")
