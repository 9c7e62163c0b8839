"""API keys and tenants: who is calling the public API.

The keys file (ASYA_GATEWAY_API_KEYS_FILE) holds one key per line as the SHA-256 of the key,
never the key itself, and the tenant it belongs to:

    # tenant "acme": key generated with `openssl rand -hex 32`
    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08: acme

Blank lines and `#` comments are ignored. A client sends `Authorization: Bearer <key>`; the
gateway hashes what it got and compares it with every stored hash in constant time, so
neither the answer nor its timing says how close a guess was. Several keys may share a
tenant (to rotate one without downtime). A tenant sees, follows and cancels only its own
tasks.

Without a keys file, auth is off and every caller is the tenant "" (the empty string).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from asya_gateway.errors import ApiError

__all__ = [
    "ApiKeys",
    "KeysError",
    "bearer_token",
    "hash_key",
    "unauthorized",
]

_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class KeysError(ValueError):
    """The keys file cannot be used; the message names the file and the line."""


def hash_key(key: str) -> str:
    """What the keys file stores for `key`: its SHA-256, lower-case hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKeys:
    # (sha256 digest, tenant); a tuple, scanned whole on every check (see tenant_of).
    entries: tuple[tuple[bytes, str], ...]

    @classmethod
    def load(cls, path: str | Path) -> ApiKeys:
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeysError(
                f"cannot read the API keys file {source}: {exc.strerror or exc}"
            ) from None
        return cls.parse(text, str(source))

    @classmethod
    def parse(cls, text: str, source: str) -> ApiKeys:
        entries: list[tuple[bytes, str]] = []
        seen: set[bytes] = set()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            digest_hex, sep, tenant = (part.strip() for part in line.partition(":"))
            if not sep or not _HEX_SHA256.fullmatch(digest_hex) or not tenant:
                raise KeysError(
                    f"{source}:{number}: expected `<sha256 of the key, 64 hex digits>: <tenant>`"
                    ' (store the key\'s hash, e.g. `printf %s "$KEY" | sha256sum`, never the key)'
                )
            digest = bytes.fromhex(digest_hex)
            if digest in seen:
                raise KeysError(f"{source}:{number}: this key hash is listed twice")
            seen.add(digest)
            entries.append((digest, tenant))
        if not entries:
            raise KeysError(
                f"{source} lists no keys, so nobody could call the gateway; add "
                "`<sha256>: <tenant>` lines, or leave ASYA_GATEWAY_API_KEYS_FILE unset to "
                "turn auth off"
            )
        return cls(tuple(entries))

    def tenant_of(self, key: str) -> str | None:
        """The tenant of `key`, or None when it is not one of ours.

        Every stored hash is compared, matched or not, so the time taken does not depend on
        which entry (if any) matched.
        """
        presented = hashlib.sha256(key.encode("utf-8")).digest()
        found: str | None = None
        for digest, tenant in self.entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = tenant
        return found

    def authenticate(self, authorization: str | None) -> str:
        """The caller's tenant, from an Authorization header; ApiError 401 otherwise."""
        key = bearer_token(authorization)
        if key is None:
            raise unauthorized("this gateway needs an API key: send `Authorization: Bearer <key>`")
        tenant = self.tenant_of(key)
        if tenant is None:
            raise unauthorized("the API key is not valid; check it, or ask for a new one")
        return tenant


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
