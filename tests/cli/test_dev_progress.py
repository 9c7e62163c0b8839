"""`asya dev`'s line per finished envelope, from the records x-sink and x-sump write."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from asya_cli import dev_progress

SUCCEEDED = {
    "id": "t-1",
    "route": {"prev": ["classify", "respond"], "curr": "x-sink", "next": []},
    "status": {
        "phase": "succeeded",
        "actor": "respond",
        "created_at": "2026-12-07T10:00:00.000Z",
        "updated_at": "2026-12-07T10:00:00.123Z",
    },
}
FAILED = {
    "id": "t-2",
    "route": {"prev": ["classify", "x-sink"], "curr": "x-sump", "next": ["respond"]},
    "status": {
        "phase": "failed",
        "actor": "classify",
        "created_at": "2026-12-07T10:00:00.000Z",
        "updated_at": "2026-12-07T10:00:01.500Z",
        "reason": "HandlerError",
        "error": {"type": "KeyError", "message": "'text'\nmore lines"},
    },
}


def test_a_success_names_its_route_and_time() -> None:
    assert dev_progress.describe(SUCCEEDED) == "t-1 succeeded in 123 ms: classify > respond"


def test_a_failure_names_where_and_why() -> None:
    assert dev_progress.describe(FAILED) == (
        "t-2 failed in 1500 ms at classify (HandlerError: KeyError: 'text'): classify"
    )


@pytest.mark.parametrize("record", [{"id": "x"}, {"id": "x", "status": "?", "route": []}])
def test_a_malformed_record_still_gets_a_line(record: dict[str, object]) -> None:
    assert dev_progress.describe(record) == "x failed: (no step ran)"


def test_each_new_record_is_said_once(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "sump").mkdir()
    (tmp_path / "results" / "old.json").write_text(json.dumps({**SUCCEEDED, "id": "old"}))
    progress = dev_progress.Progress(tmp_path, io.StringIO())  # what is there is not news

    (tmp_path / "results" / "t-1.json").write_text(json.dumps(SUCCEEDED))
    (tmp_path / "results" / ".t-3.json.tmp").write_text("{")  # a write in progress
    # A failure x-sink recorded and passed on to x-sump is said once.
    (tmp_path / "results" / "t-2.json").write_text(json.dumps(FAILED))
    (tmp_path / "sump" / "t-2.json").write_text(json.dumps(FAILED))
    # One that reached x-sump alone (it never ran) is said too.
    alone = {**FAILED, "id": "t-4", "route": None, "status": {"reason": "ParseError"}}
    (tmp_path / "sump" / "t-4.json").write_text(json.dumps(alone))

    assert sorted(progress.lines()) == [
        "t-1 succeeded in 123 ms: classify > respond",
        "t-2 failed in 1500 ms at classify (HandlerError: KeyError: 'text'): classify",
        "t-4 failed (ParseError): (no step ran)",
    ]
    assert progress.lines() == []
    # Rewritten (a redriven envelope that now succeeded): said again.
    (tmp_path / "results" / "t-2.json").write_text(json.dumps({**SUCCEEDED, "id": "t-2"}))
    assert progress.lines() == ["t-2 succeeded in 123 ms: classify > respond"]
