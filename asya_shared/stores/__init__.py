"""Result stores: where x-sink and x-sump keep the records of the envelopes they receive, and
where the CLI and the gateway read them back.

`open_store` is the one place that maps a URL scheme to its module; a backend whose SDK is
not installed is reported with the extra to install. Backends implement the protocol in
base.py and raise only StoreError.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from asya_shared.stores.base import InvalidKey, ResultStore, StoreError, check_key

if TYPE_CHECKING:  # keeps the package namespace to the names in __all__
    from collections.abc import Mapping

__all__ = [
    "FORMS",
    "InvalidKey",
    "ResultStore",
    "StoreError",
    "check_key",
    "check_url",
    "open_store",
]

FORMS = "file://relative/dir, file:///absolute/dir, s3://bucket or s3://bucket/prefix"


def open_store(url: str, *, environ: Mapping[str, str] | None = None) -> ResultStore:
    """The store a URL names. Does not connect: the first put or get does.

    `environ` supplies backend settings (the S3 endpoint and region); default os.environ.
    Raises ValueError for an unknown scheme or a malformed URL.
    """
    scheme, sep, _ = url.partition("://")
    if scheme == "file" and sep:
        from asya_shared.stores import file

        return file.FileStore.from_url(url)
    if scheme == "s3" and sep:
        from asya_shared.stores import s3

        return s3.S3Store.from_url(url, os.environ if environ is None else environ)
    raise ValueError(f"unsupported result store URL {url!r}; accepted forms: {FORMS}")


def check_url(url: str) -> str:
    """Return `url` if `open_store` would accept it, without opening anything (a setting
    checked at start-up). Raises ValueError saying what is wrong, a missing SDK included."""
    scheme, sep, _ = url.partition("://")
    if scheme == "file" and sep:
        from asya_shared.stores import file

        file.parse_url(url)
        return url
    if scheme == "s3" and sep:
        try:
            from asya_shared.stores import s3
        except ImportError as exc:
            raise ValueError(str(exc)) from None
        s3.parse_url(url)
        return url
    raise ValueError(f"unsupported result store URL {url!r}; accepted forms: {FORMS}")
