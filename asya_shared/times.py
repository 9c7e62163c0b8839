"""RFC 3339 times as Asya writes them on the wire ("2026-12-07T12:00:00.000Z", always UTC)
and reads them back (any offset; a time without one is taken as UTC). Pure."""

from __future__ import annotations

import datetime

__all__ = ["parse_rfc3339", "rfc3339"]


def rfc3339(moment: datetime.datetime, *, timespec: str = "milliseconds") -> str:
    """`moment` in UTC with a Z; `timespec` as datetime.isoformat takes it."""
    text = moment.astimezone(datetime.UTC).isoformat(timespec=timespec)
    return text.replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime.datetime:
    """The aware UTC datetime `text` names; ValueError when it is no RFC 3339 time."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)
