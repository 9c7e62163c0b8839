"""Store URLs: which store a URL names, where a SQLite file lies, and how to show a URL in a
message without its password.

    sqlite:///relative/file.db     a file relative to the working directory
    sqlite:////absolute/file.db    an absolute path (sqlite:// + "/" + the path, as SQLAlchemy
                                   spells it); `sqlite_url(path)` writes one for a Path
    postgresql://user:pass@host:5432/db   (postgres:// too); other query parameters are
                                   PostgreSQL settings, e.g. ?search_path=gateway
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from asya_gateway.store.base import StoreError

__all__ = [
    "POSTGRES_SCHEMES",
    "SQLITE_PREFIX",
    "UnknownStoreURL",
    "redact",
    "scheme_of",
    "sqlite_path",
    "sqlite_url",
    "unknown_scheme",
]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
_EXAMPLES = (
    "sqlite:///relative/file.db, sqlite:////absolute/file.db or "
    "postgresql://user:password@host:5432/database"
)


class UnknownStoreURL(StoreError, ValueError):
    """The URL names no store this gateway has."""


def scheme_of(url: str) -> str:
    return url.partition(":")[0].lower()


def sqlite_url(path: Path | str) -> str:
    """The store URL of a SQLite file at `path` (absolute or relative)."""
    return SQLITE_PREFIX + str(path)


def sqlite_path(url: str) -> Path:
    """The file a sqlite URL names; UnknownStoreURL when it names none."""
    if not url.lower().startswith(SQLITE_PREFIX):
        raise UnknownStoreURL(f"store URL {redact(url)!r} is not a SQLite URL: write {_EXAMPLES}")
    path = url[len(SQLITE_PREFIX) :]
    if not path or path == ":memory:" or "?" in path:
        # An in-memory database would vanish with the process and could not be shared by
        # two gateways; a query string would silently become part of the file name.
        raise UnknownStoreURL(f"store URL {url!r} names no file: write {_EXAMPLES}")
    return Path(path)


def redact(url: str) -> str:
    """`url` with its password (if any) replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable store URL>"
    if password is None:
        return url
    # Everything after the last "@" is host[:port], as written; the password may hold ":".
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def unknown_scheme(url: str) -> UnknownStoreURL:
    return UnknownStoreURL(
        f"store URL {redact(url)!r} names no store this gateway has: write {_EXAMPLES} "
        "(--store or ASYA_GATEWAY_STORE)"
    )
