"""Server-Sent Events as a client reads them: lines in, events out (pure, no I/O).

The rules of the WHATWG event-stream format that a client of the gateway needs: `field:
value` lines (one optional space after the colon), `data` lines joined with newlines, an
event dispatched at a blank line, comment lines (`: keep-alive`) ignored, `id` remembered
across events so a reconnect can send it as `Last-Event-ID`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event", "Parser"]


@dataclass(frozen=True)
class Event:
    event: str  # "message" when the stream names none
    data: str
    id: str | None  # the last `id:` seen so far in the stream (it carries over)


class Parser:
    """Feed it the stream's lines (without their line endings); it returns the events that
    each line completes."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        # `retry` and unknown fields: the gateway's clients reconnect on their own terms.
        return None

    def _dispatch(self) -> Event | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None  # a block without data is no event, by the format's rules
        return Event(event=event, data="\n".join(data), id=self.last_id)
