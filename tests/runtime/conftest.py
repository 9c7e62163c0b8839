"""The runtime tests use the shared runtime-process support (fixtures come from tests/conftest)."""

from tests.support.runtime import (
    HANDLERS_DIR,
    RuntimeFactory,
    RuntimeProcess,
    async_client_for,
    client_for,
    envelope,
)

__all__ = [
    "HANDLERS_DIR",
    "RuntimeFactory",
    "RuntimeProcess",
    "async_client_for",
    "client_for",
    "envelope",
]
