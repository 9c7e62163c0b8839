"""Pydantic's validation errors of an AsyncActor or AsyaBinding, as one line per problem.

`asya render` and `asya dev` read manifests through the operator's own models and must word
a bad field the same way: `spec.concurrency: Input should be greater than or equal to 1
(got 0)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


def describe(exc: ValidationError) -> list[str]:
    """Each error as `spec.field.path: message (got value)`."""
    problems = []
    # from_object validates the spec on its own, so its locations start below `spec`.
    root = "spec" if exc.title in ("AsyncActorSpec", "AsyaBindingSpec") else "metadata"
    for error in exc.errors():
        path = root
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        got = error.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
        problems.append(f"{path}: {error['msg']}{shown}")
    return problems
