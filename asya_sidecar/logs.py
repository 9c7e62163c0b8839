"""Structured logs: one JSON object per line with `actor`, `envelope_id` and `trace_id`.

The envelope fields come from a context variable that the consumer binds per envelope, so
every line logged while an envelope is processed carries them without passing them around.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

_envelope: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "asya_envelope", default=MappingProxyType({})
)


@contextmanager
def envelope_context(**fields: str) -> Iterator[None]:
    """Attach `envelope_id`, `trace_id`, ... to every record logged inside the block."""
    token = _envelope.set({**_envelope.get(), **fields})
    try:
        yield
    finally:
        _envelope.reset(token)


class _ContextFilter(logging.Filter):
    def __init__(self, actor: str) -> None:
        super().__init__()
        self.actor = actor

    def filter(self, record: logging.LogRecord) -> bool:
        record.actor = self.actor
        for key, value in _envelope.get().items():
            setattr(record, key, value)
        return True


_FIELDS = ("actor", "envelope_id", "trace_id", "queue", "destination", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={getattr(record, key)}"
            for key in _FIELDS
            if getattr(record, key, None) is not None
        )
        text = f"{_iso(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        text = f"{text} {extras}" if extras else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(*, actor: str, level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter(actor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aio-pika and aiormq narrate every reconnect attempt at INFO, httpx every request (the
    # gateway reports post once a second); ours say what matters.
    for noisy in ("aio_pika", "aiormq", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _iso(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
