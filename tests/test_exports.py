"""The public names of every package: `__all__` and reality must not drift apart (as httpx's
tests/test_exported_members.py does). A package that re-exports nothing has an empty
`__all__`; its submodules are imported by name."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

PACKAGES = [
    "asya_callers",
    "asya_cli",
    "asya_crew",
    "asya_crew.joinstore",
    "asya_shared.stores",
    "asya_gateway",
    "asya_gateway.store",
    "asya_operator",
    "asya_runtime",
    "asya_shared",
    "asya_sidecar",
    "asya_sump",
    "asya_transports",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    public = {
        member
        for member, value in vars(module).items()
        if not member.startswith("_")
        and not isinstance(value, ModuleType)
        and member not in ("annotations", "TYPE_CHECKING")
    }
    assert exported == public
    assert all(hasattr(module, member) for member in exported)
