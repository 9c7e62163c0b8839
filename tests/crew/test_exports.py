"""The public names of the crew packages: `__all__` and reality must not drift apart."""

from __future__ import annotations

from types import ModuleType

import pytest

import asya_crew
import asya_crew.stores


@pytest.mark.parametrize("module", [asya_crew, asya_crew.stores], ids=lambda m: m.__name__)
def test_all_lists_exactly_the_public_names(module: ModuleType) -> None:
    exported = set(module.__all__)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and name not in ("annotations", "TYPE_CHECKING")
    }
    assert exported == public
    assert all(hasattr(module, name) for name in exported)
