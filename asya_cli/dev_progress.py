"""`asya dev`'s line per finished envelope: which route it took, how it ended, how long.

x-sink and x-sump write a record file per envelope under the state directory (the file
stores of `asya dev`); `Progress` notices new and rewritten records and prints a line for
each. A record in x-sump that x-sink also has (a failure x-sink passed on) is said once.
`describe` is pure.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from asya_shared import names, redrive
from asya_shared.times import parse_rfc3339

POLL_S = 0.25
ERROR_CHARS = 120
# The end of every road, not a step a user routed through.
ENDS = frozenset({names.SINK, names.SUMP})


def describe(record: Mapping[str, Any]) -> str:
    """`<id> succeeded in 12 ms: a > b` or `<id> failed in 80 ms at a (HandlerError:
    KeyError: 'text'): a`."""
    status, route = _mapping(record.get("status")), _mapping(record.get("route"))
    phase = status.get("phase") or "failed"
    steps = [s for s in route.get("prev") or [] if isinstance(s, str) and s not in ENDS]
    line = f"{record.get('id')} {phase}"
    elapsed = _elapsed_ms(status)
    if elapsed is not None:
        line += f" in {elapsed} ms"
    if phase != "succeeded":
        cause = [str(status["reason"])] if status.get("reason") else []
        error = status.get("error")
        if isinstance(error, dict) and error.get("type"):
            cause.append(redrive.error_line(error)[:ERROR_CHARS])
        actor = status.get("actor")
        if isinstance(actor, str) and actor not in ENDS:
            line += f" at {actor}"
        if cause:
            line += f" ({': '.join(cause)})"
    return f"{line}: {' > '.join(steps) or '(no step ran)'}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _elapsed_ms(status: Mapping[str, Any]) -> int | None:
    try:
        created = parse_rfc3339(str(status["created_at"]))
        updated = parse_rfc3339(str(status["updated_at"]))
    except (KeyError, ValueError):
        return None
    return max(0, round((updated - created).total_seconds() * 1000))


class RecordWatch:
    """The record files of one store directory that are new or rewritten since last asked."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen = self._scan()  # what was there before `asya dev` started is not news

    def _scan(self) -> dict[str, int]:
        found: dict[str, int] = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    # Hidden files are writes in progress.
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        found[entry.name] = entry.stat().st_mtime_ns
        except FileNotFoundError:
            pass
        return found

    def changed(self) -> list[Path]:
        now = self._scan()
        news = [name for name, mtime in now.items() if self._seen.get(name) != mtime]
        self._seen = now
        return [self.directory / name for name in sorted(news, key=now.__getitem__)]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class Progress:
    """Prints a line per envelope that finishes from now on (`run`, until cancelled)."""

    def __init__(self, state_dir: Path, out: TextIO) -> None:
        self.results = RecordWatch(state_dir / "results")
        self.sump = RecordWatch(state_dir / "sump")
        self.out = out

    def lines(self) -> list[str]:
        """The lines for what finished since the last call."""
        lines = []
        for path in self.results.changed():
            record = _read(path)
            if record is not None:
                lines.append(describe(record))
        for path in self.sump.changed():
            if (self.results.directory / path.name).exists():
                continue  # a failure x-sink recorded and passed on: said above
            record = _read(path)
            if record is not None:
                lines.append(describe(record))
        return lines

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            for line in self.lines():
                print(f"asya dev: {line}", file=self.out, flush=True)
