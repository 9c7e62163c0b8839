"""The stored form of an envelope and the key it is stored under. Pure: no I/O, no clock.

x-sink and x-sump write the same record, so a tool reading results needs to know one format:

    {"id", "parent_id", "route", "headers", "status", "payload"}

serialised as UTF-8 JSON (non-ASCII text kept as is) under the key `<id>.json`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, TypedDict

# The envelope fields a crew handler reads through the ABI (`yield "GET", ".<field>"`), in
# record order; the payload is the handler's argument.
FIELDS = ("id", "parent_id", "route", "headers", "status")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Room for the hash and ".json" within the 255-byte file name limit, with margin; S3 allows
# 1024-byte keys, so the file store is the tighter bound.
MAX_ID_PART = 200
_HASH_LENGTH = 12  # 48 bits: collisions need ~16 million look-alike ids in one store


class Record(TypedDict):
    id: Any
    parent_id: Any
    route: Any
    headers: Any
    status: Any
    payload: Any


def build(fields: dict[str, Any], payload: Any) -> Record:
    """The record of one envelope from its GET results (missing fields become null)."""
    return Record(
        id=fields.get("id"),
        parent_id=fields.get("parent_id"),
        route=fields.get("route"),
        headers=fields.get("headers"),
        status=fields.get("status"),
        payload=payload,
    )


def encode(record: Record) -> bytes:
    # NaN and infinities are written as-is (allow_nan): the runtime accepted them on input,
    # and refusing them here would fail the same envelope on every redelivery.
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (a "\ud800" escape in the input JSON) has no UTF-8 form; escaped
        # again it is still valid JSON that reads back to the same string.
        return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def key(envelope_id: Any) -> str:
    """`<id>.json`, made safe for every store.

    Characters outside [A-Za-z0-9._-] and a leading "." become "_", and very long ids are
    cut. Any such change could make two ids share a key, so a changed id gets a short hash of
    the original appended. Ids that are not strings (a malformed envelope) are keyed by their
    JSON text, hash included.
    """
    is_text = isinstance(envelope_id, str)
    text = envelope_id if is_text else json.dumps(envelope_id, default=str)
    safe = _UNSAFE.sub("_", text)[:MAX_ID_PART]
    if safe.startswith("."):
        safe = "_" + safe[1:]  # no hidden files, and never "." or ".."
    if safe != text or not is_text or not safe:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        safe = f"{safe}-{digest[:_HASH_LENGTH]}"
    return f"{safe}.json"
