"""asya send: the envelope it builds (pure)."""

from __future__ import annotations

import datetime

from asya_cli.send import build_envelope

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)


def test_a_new_envelope_starts_at_the_first_actor() -> None:
    built = build_envelope(
        ["prep", "infer", "post"],
        {"x": 1},
        envelope_id="e",
        headers={"h": "1"},
        traceparent="00-t-s-01",
        now=NOW,
    )

    assert built["route"] == {"prev": [], "curr": "prep", "next": ["infer", "post"]}
    assert built["headers"] == {"traceparent": "00-t-s-01", "h": "1"}
    assert built["status"]["phase"] == "pending"
    assert built["status"]["actor"] == "prep"
    assert built["status"]["deadline_at"] is None
    assert built["status"]["created_at"] == "2026-11-24T12:00:00.000Z"


def test_a_timeout_becomes_the_deadline() -> None:
    built = build_envelope(
        ["a"], {}, envelope_id="e", headers={}, traceparent="t", now=NOW, timeout=90
    )

    assert built["status"]["deadline_at"] == "2026-11-24T12:01:30.000Z"
