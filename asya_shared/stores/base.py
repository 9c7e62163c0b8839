"""The ResultStore protocol and its errors: the only view of storage the crew, the CLI and the
gateway have of the result stores.

One module per backend implements the protocol (file.py, s3.py), importing only its own SDK
and translating that SDK's exceptions into StoreError, so a handler never sees an OSError or
a botocore exception. Key validation lives here because every backend must accept exactly the
same keys: a record stored on disk by `asya dev` must be storable in S3 under the same name.

Errors (what the caller does next):

    StoreError      base class: the operation failed; the envelope must be retried later,
    │               never acknowledged as stored
    └── InvalidKey  the key breaks the rules below; retrying cannot help (a bug in the caller)
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

# Keys are one name, or "dir/name": at most one sub-level, so a store maps onto a flat bucket
# prefix or a directory with one level of sub-directories and nothing else.
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_KEY_DEPTH = 2
# 255 bytes is the usual file name limit (ext4, xfs, APFS); keys are ASCII by construction.
MAX_SEGMENT_LENGTH = 255


class StoreError(Exception):
    """Base of every error a result store raises; the message names the store and the key."""


class InvalidKey(StoreError, ValueError):
    """A key that no store accepts."""


def is_valid_key(key: str) -> bool:
    """Whether every store accepts `key` (check_key without the error)."""
    try:
        check_key(key)
    except InvalidKey:
        return False
    return True


def check_key(key: str) -> str:
    """Return `key` if every store accepts it, else raise InvalidKey saying why."""
    rule = (
        "keys are 'name' or 'dir/name' made of letters, digits, '.', '_' and '-' "
        f"(at most {MAX_SEGMENT_LENGTH} characters per part), and no part may be '.' or '..'"
    )
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"invalid key {key!r}: {rule}")
    segments = key.split("/")
    if len(segments) > MAX_KEY_DEPTH:
        raise InvalidKey(f"invalid key {key!r}: more than one '/'; {rule}")
    for segment in segments:
        if segment in (".", ".."):
            raise InvalidKey(f"invalid key {key!r}: {segment!r} would leave the store; {rule}")
        if not _SEGMENT.match(segment) or len(segment) > MAX_SEGMENT_LENGTH:
            raise InvalidKey(f"invalid key {key!r}: {rule}")
    return key


@runtime_checkable
class ResultStore(Protocol):
    """A place to keep result records by key. Safe for concurrent use from one event loop.

    `put` returns only once the data is durable (a later `get`, from any process, sees it) and
    replaces any previous value atomically: a reader sees the old bytes or the new, never a mix.
    """

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there. Raises StoreError."""

    async def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None if there are none. Raises StoreError."""
        ...

    async def list(self, prefix: str = "") -> list[str]:
        """Every key stored that starts with `prefix`, sorted. Raises StoreError.

        Only keys this store could have written are listed: nothing half-written, and nothing
        that check_key would refuse (a stranger's file in the directory or bucket).
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; removing a key that is not there is no error. Raises StoreError."""

    async def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
