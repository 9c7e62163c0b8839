"""examples/llm-review: support messages drafted and judged by Gemma 3 270M on llama.cpp.

The first tests exercise the example's own handlers (the score parser above all) as plain
functions. The last one runs `demo.py`, the way `make demo-llm` does, against a real
llama.cpp server, and checks every stored result, the route each message took and the token
events the draft streamed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from asya_cli import manifests
from tests.support.services import free_port

EXAMPLE = Path(__file__).parent.parent / "examples" / "llm-review"
ROUTE = ["classify", "draft", "judge", "gate"]


def load_support() -> ModuleType:
    # The example's directory name is not a package name; load its module by path.
    spec = importlib.util.spec_from_file_location("llm_review_support", EXAMPLE / "support.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


support = load_support()


# --- the judge's answer: a 1-5 score out of whatever a 270M model says -----------------------


@pytest.mark.parametrize(
    ("answer", "score", "source"),
    [
        ("4", 4, "digit"),
        ("5.", 5, "digit"),
        ("**Score:** 2\n\nThe reply is polite.", 2, "digit"),
        ("I would rate this reply 3 out of 5.", 3, "fraction"),
        ("Score: 4/5", 4, "fraction"),
        ("Rating: 3.5/5", 4, "fraction"),
        ("8/10 - helpful", 4, "fraction"),
        ("10 out of 10", 5, "fraction"),
        ("Four.", 4, "word"),
        ("score: two", 2, "word"),
        ("I'd rate it five", 5, "word"),
        ("three out of five", 3, "word"),
        ("★★★★☆", 4, "stars"),
        # The scale echoed from the prompt is not the score.
        ("On a scale from 1 (bad) to 5 (excellent), I give it 2.", 2, "digit"),
        ("1-5: 4", 4, "digit"),
        # Digits inside other numbers are not a score.
        ("Error 503 fixed in 2024: 3", 3, "digit"),
        # Nothing usable: 0, which sends the draft to a person.
        ("", 0, "none"),
        ("The reply is good.", 0, "none"),
        ("This one is fine", 0, "none"),
        ("0", 0, "none"),
        ("7", 0, "none"),
        ("The reply is 100% correct", 0, "none"),
        ("Rate the support reply from 1 (bad) to 5 (excellent)", 0, "none"),
    ],
)
def test_parse_score_reads_a_score_out_of_free_text(answer: str, score: int, source: str) -> None:
    assert support.parse_score(answer) == (score, source)


def drive(handler: Any, payload: dict[str, Any]) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """Run a sync generator handler: its results, and the commands it yielded."""
    results: list[Any] = []
    commands: list[tuple[Any, ...]] = []
    generator: Generator[Any, Any, None] = handler(payload)
    for item in generator:
        (commands if isinstance(item, tuple) else results).append(item)
    return results, commands


@pytest.mark.parametrize(
    ("threshold", "verdict", "next_steps"),
    [
        ("3", "3", ["store"]),
        ("3", "Score: 5/5", ["store"]),
        ("3", "2", ["review", "store"]),
        ("3", "no idea", ["review", "store"]),
        ("5", "4", ["review", "store"]),
        ("1", "1", ["store"]),
    ],
)
def test_gate_sends_drafts_under_the_threshold_to_review(
    monkeypatch: pytest.MonkeyPatch, threshold: str, verdict: str, next_steps: list[str]
) -> None:
    monkeypatch.setenv("REVIEW_THRESHOLD", threshold)
    gate = support.Gate()

    [result], commands = drive(gate.gate, {"text": "t", "draft": "d", "verdict": verdict})

    assert commands == [("SET", ".route.next[:0]", next_steps)]
    score = support.parse_score(verdict).value
    assert result == {
        "text": "t",
        "draft": "d",
        "verdict": verdict,
        "score": score,
        "score_source": support.parse_score(verdict).source,
        "threshold": int(threshold),
        "passed": next_steps == ["store"],
    }
    reviewed = support.review(result)
    assert reviewed["needs_review"] is True
    assert str(score) in reviewed["review_reason"] or "no 1-5 score" in reviewed["review_reason"]


@pytest.mark.parametrize("threshold", ["0", "6", "three", "-1", "2.5"])
def test_gate_refuses_a_threshold_outside_1_to_5(
    monkeypatch: pytest.MonkeyPatch, threshold: str
) -> None:
    monkeypatch.setenv("REVIEW_THRESHOLD", threshold)
    with pytest.raises(ValueError, match=rf"REVIEW_THRESHOLD='{re.escape(threshold)}' must be"):
        support.Gate()


def test_gate_says_which_field_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVIEW_THRESHOLD", raising=False)
    gate = support.Gate()
    assert gate.threshold == support.DEFAULT_THRESHOLD
    with pytest.raises(ValueError, match=r"payload\.verdict .*is `judge` before `gate`"):
        drive(gate.gate, {"text": "t", "draft": "d"})


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I was charged twice, please refund me", "billing"),
        ("The dashboard is down and shows error 503", "outage"),
        ("I cannot log in since I reset my password", "account"),
        ("Do you have an office in Lisbon?", "other"),
    ],
)
def test_classify_picks_the_category_with_most_keywords(text: str, category: str) -> None:
    assert support.classify({"text": text, "ticket": "M-9"}) == {
        "text": text,
        "ticket": "M-9",
        "category": category,
    }


def test_classify_refuses_a_payload_without_text() -> None:
    with pytest.raises(ValueError, match=r'classify needs a payload like \{"text"'):
        support.classify({"body": "hello"})


# --- the whole pipeline, on a real model ----------------------------------------------------

EMITTED = re.compile(
    r"^\[draft/sidecar\] .* handler emitted (\d+) side event\(s\): (\[.*\]) actor=draft "
    r"envelope_id=(\S+)"
)


def token_events(dev_log: str) -> dict[str, list[dict[str, Any]]]:
    """The FLY events the draft sidecar logged at debug level, by envelope id."""
    found: dict[str, list[dict[str, Any]]] = {}
    for line in dev_log.splitlines():
        match = EMITTED.match(line)
        if match:
            events = ast.literal_eval(match.group(2))
            assert len(events) == int(match.group(1)), line
            found.setdefault(match.group(3), []).extend(events)
    return found


@pytest.mark.slow
@pytest.mark.model_servers
@pytest.mark.timeout(900)
def test_llm_review_demo_drafts_judges_and_routes_by_score(tmp_path: Path) -> None:
    # Debug logs make the draft's sidecar print each token event it forwards.
    result = subprocess.run(
        [sys.executable, "demo.py", "--state-dir", str(tmp_path), "--port", str(free_port())],
        cwd=EXAMPLE,
        env={**os.environ, "ASYA_LOG_LEVEL": "DEBUG"},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "asya dev stopped cleanly" in result.stdout

    messages = [
        json.loads(line) for line in (EXAMPLE / "messages.jsonl").read_text().splitlines() if line
    ]
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]
    by_ticket = {r["payload"]["ticket"]: r for r in records}
    assert sorted(by_ticket) == sorted(m["ticket"] for m in messages), output
    [gate] = [a for a in manifests.load_actors([EXAMPLE / "actors.yaml"]) if a.name == "gate"]
    threshold = int(gate.env["REVIEW_THRESHOLD"])
    drafts = []
    for message in messages:
        record = by_ticket[message["ticket"]]
        payload, route = record["payload"], record["route"]["prev"]
        assert record["status"]["phase"] == "succeeded", record
        assert payload["text"] == message["text"]
        assert payload["category"] == support.classify(message)["category"]
        draft = payload["draft"]
        assert isinstance(draft, str), payload
        assert draft.strip(), payload
        # Model output, not an echo of the message or of the prompt.
        assert draft.strip() != message["text"]
        assert not draft.startswith("Dear support team")
        drafts.append(draft)
        # The gate's reading of the verdict, and the branch it chose.
        assert isinstance(payload["verdict"], str)
        assert (payload["score"], payload["score_source"]) == support.parse_score(
            payload["verdict"]
        )
        assert 0 <= payload["score"] <= 5
        assert payload["threshold"] == threshold
        if payload["score"] >= threshold:
            assert route == [*ROUTE, "store"], payload
            assert payload["needs_review"] is False
        else:
            assert route == [*ROUTE, "review", "store"], payload
            assert payload["needs_review"] is True
            assert payload["review_reason"]
        assert f"{message['ticket']}  " in result.stdout
        assert " -> ".join(route) in result.stdout
    assert len(set(drafts)) == len(drafts), drafts  # one reply per message, not a stub

    # The draft streamed: its sidecar got token events, and they add up to the stored draft.
    events = token_events((tmp_path / "dev.log").read_text())
    for message in messages:
        record = by_ticket[message["ticket"]]
        tokens = events.get(record["id"])
        assert tokens, f"no token events for {message['ticket']} ({record['id']})"
        assert all(event["type"] == "token" for event in tokens)
        assert "".join(event["text"] for event in tokens) == record["payload"]["draft"]
        assert len(tokens) > 1  # streamed in pieces, not sent whole

    # The per-step table comes from the sidecars' metrics: every step ran, and only the
    # draft (streaming) emitted events.
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = summary["steps"]
    reviewed = sum(1 for r in records if r["payload"]["needs_review"])
    expected_calls = {step: len(messages) for step in [*ROUTE, "store"]}
    expected_calls["review"] = reviewed
    assert {step: int(s["calls"]) for step, s in steps.items()} == expected_calls
    assert steps["draft"]["fly_events"] == sum(len(events[r["id"]]) for r in records)
    assert all(s["fly_events"] == 0 for step, s in steps.items() if step != "draft")
    assert steps["draft"]["seconds"] > steps["classify"]["seconds"]
    assert "token events" in result.stdout
