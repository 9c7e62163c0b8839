"""Every environment variable Asya reads is documented under docs/."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_shared import env

DOCS = "\n".join(p.read_text() for p in (Path(__file__).parent.parent / "docs").glob("*.md"))
NAMES = sorted(v for k, v in vars(env).items() if k.isupper() and isinstance(v, str))


@pytest.mark.parametrize("name", NAMES)
def test_environment_variable_is_documented(name: str) -> None:
    assert f"`{name}`" in DOCS, f"{name} is not documented in docs/*.md"
