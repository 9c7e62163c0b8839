"""examples/llm-review: support messages drafted and judged by Gemma 3 270M on llama.cpp,
and paused for a person when the judge is not convinced.

The first tests exercise the example's own handlers (the score parser above all) as plain
functions. The next ones run the example's pipeline after the two model calls (classify,
gate, review, x-pause, store) under `asya dev` with its gateway, on messages that already
hold a draft and the judge's answer, and play the person with `asya get` and `asya resume`.
The last one runs `demo.py`, the way `make demo-llm` does, against a real llama.cpp server,
and checks every stored result, the route each message took, what the person the demo
plays decided and the token events the draft streamed.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from asya_cli import manifests
from asya_shared import pauses
from e2e.asya_dev import TIMEOUT_S, Dev, running_dev
from tests.support.services import free_port
from tests.support.waiting import wait_until

EXAMPLE = Path(__file__).parent.parent / "examples" / "llm-review"
ROUTE = ["classify", "draft", "judge", "gate"]
REVIEWED = ["review", "x-pause", "store"]


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
        ("3", "2", REVIEWED),
        ("3", "no idea", REVIEWED),
        ("5", "4", REVIEWED),
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
    [reviewed], _ = drive(support.review, result)
    assert reviewed["needs_review"] is True
    assert str(score) in reviewed["review_reason"] or "no 1-5 score" in reviewed["review_reason"]


SCORED = {
    "ticket": "T-7",
    "text": "I was charged twice, please refund me",
    "category": "billing",
    "draft": "Dear Anna, we are looking into it.",
    "verdict": "1",
    "score": 1,
    "score_source": "digit",
    "threshold": 3,
    "passed": False,
}


def test_review_asks_the_person_to_approve_the_draft_or_write_a_reply() -> None:
    [reviewed], commands = drive(support.review, SCORED)

    [(command, path, header)] = commands
    assert (command, path) == ("SET", ".headers.x-asya-pause")
    # x-pause parses the header with this same function: a header it refuses fails the task.
    spec = pauses.parse_spec(header)
    assert [(f.name, f.type, f.required, f.payload_key) for f in spec.fields] == [
        ("approved", "boolean", True, "/review/approved"),
        ("reply", "string", False, "/review/reply"),
    ]
    assert spec.prompt == (
        "The judge scored the draft 1/5, below the threshold 3.\n"
        "Customer, ticket T-7 (billing): I was charged twice, please refund me\n"
        "Draft reply: Dear Anna, we are looking into it."
    )
    assert reviewed == {
        **SCORED,
        "needs_review": True,
        "review_reason": "the judge scored the draft 1/5, below the threshold 3",
    }


@pytest.mark.parametrize(
    ("answer", "outcome", "reply"),
    [
        ({"approved": True}, "approved", "Dear Anna, we are looking into it."),
        ({"approved": False, "reply": "We refunded you."}, "edited", "We refunded you."),
        # A reply of the person's own is what they want sent, whatever `approved` says.
        ({"approved": True, "reply": "We refunded you."}, "edited", "We refunded you."),
        ({"approved": False}, "declined", None),
        ({"approved": False, "reply": "  "}, "declined", None),
    ],
)
def test_store_sends_what_the_person_decided(
    answer: dict[str, Any], outcome: str, reply: str | None
) -> None:
    [reviewed], commands = drive(support.review, SCORED)
    spec = pauses.parse_spec(commands[0][2])
    # What the gateway does with the input of `asya resume`.
    pauses.check_input(spec, answer)
    resumed = pauses.merge(reviewed, spec, answer)

    stored = support.store(resumed)

    assert stored == {**resumed, "outcome": outcome, "sent": reply is not None, "reply": reply}
    assert stored["review"] == answer


def test_store_sends_a_draft_that_passed_the_judge() -> None:
    passed = {**SCORED, "verdict": "5", "score": 5, "passed": True}

    assert support.store(passed) == {
        **passed,
        "needs_review": False,
        "outcome": "passed",
        "sent": True,
        "reply": passed["draft"],
    }


@pytest.mark.parametrize("review", [None, {}, {"approved": "yes"}, {"reply": "Hi"}])
def test_store_refuses_a_reviewed_draft_without_the_persons_decision(review: Any) -> None:
    [reviewed], _ = drive(support.review, SCORED)
    if review is not None:
        reviewed["review"] = review

    with pytest.raises(ValueError, match=r"payload\.review\.approved .*x-pause after `review`"):
        support.store(reviewed)


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


# --- the pause, under `asya dev`: everything after the two model calls --------------------

LOW = {
    "ticket": "T-1",
    "text": "My invoice is wrong, I was charged twice",
    "draft": "Dear Anna, we will look into it.",
    "verdict": "1",
}


def without_model() -> str:
    """actors.yaml without `draft` and `judge`: the messages bring their draft and verdict,
    and every other actor runs as the example defines it."""
    documents = list(yaml.safe_load_all((EXAMPLE / "actors.yaml").read_text()))
    kept = [d for d in documents if d["metadata"]["name"] not in ("draft", "judge")]
    assert len(kept) == len(documents) - 2
    return yaml.safe_dump_all(kept)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("llm-review-dev")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            # The runtimes import `support` from the example; running_dev runs them in the
            # test handlers' directory.
            paths = [str(EXAMPLE), *filter(None, [os.environ.get("PYTHONPATH")])]
            patch.setenv("PYTHONPATH", os.pathsep.join(paths))
            running = stack.enter_context(running_dev(tmp, {"actors.yaml": without_model()}))
        yield running


def submit(dev: Dev, payload: dict[str, Any]) -> str:
    done = dev.asya("submit", "classify,gate", "--payload", json.dumps(payload))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def paused(dev: Dev, payload: dict[str, Any] = LOW) -> str:
    task_id = submit(dev, payload)
    assert dev.wait_status(task_id, "paused", "succeeded", "failed")["status"] == "paused"
    return task_id


@pytest.mark.slow
def test_a_low_score_pauses_the_task_with_the_draft_and_the_fields(dev: Dev) -> None:
    task_id = paused(dev)

    task = dev.task(task_id)

    assert task["actor"] == "x-pause"
    assert task["route"] == {"prev": ["classify", "gate", "review"], "curr": "x-pause",
                             "next": ["store"]}  # fmt: skip
    prompt = task["pause"]["prompt"]
    assert "The judge scored the draft 1/5, below the threshold 3." in prompt
    assert "ticket T-1 (billing): My invoice is wrong, I was charged twice" in prompt
    assert "Draft reply: Dear Anna, we will look into it." in prompt
    assert task["pause"]["fields"] == [
        {"name": "approved", "type": "boolean", "prompt": "Send the draft as it is?",
         "payload_key": "/review/approved", "required": True},
        {"name": "reply", "type": "string", "prompt": "Your reply instead of the draft",
         "payload_key": "/review/reply", "required": False},
    ]  # fmt: skip
    assert task["pause"]["expires_at"] > task["pause"]["paused_at"]
    assert dev.result(task_id) is None  # nothing stored while a person decides


@pytest.mark.slow
@pytest.mark.parametrize(
    ("answer", "outcome", "reply"),
    [
        ({"approved": True}, "approved", LOW["draft"]),
        (
            {"approved": False, "reply": "We refunded the second charge."},
            "edited",
            "We refunded the second charge.",
        ),
        ({"approved": False}, "declined", None),
    ],
    ids=["approve", "edit", "decline"],
)
def test_asya_resume_ends_the_task_with_what_the_person_decided(
    dev: Dev, answer: dict[str, Any], outcome: str, reply: str | None
) -> None:
    task_id = paused(dev)

    done = dev.asya("resume", task_id, "--input", json.dumps(answer))

    assert done.returncode == 0, done.stderr
    task = dev.wait_status(task_id, "succeeded", "failed", "canceled")
    assert task["status"] == "succeeded", task
    assert task["route"]["prev"] == ["classify", "gate", *REVIEWED]
    result = task["result"]
    assert result["outcome"] == outcome
    assert result["reply"] == reply
    assert result["sent"] is (reply is not None)
    assert result["review"] == answer
    assert result["needs_review"] is True
    assert result["draft"] == LOW["draft"]
    record = wait_until(lambda: dev.result(task_id), what="x-sink's record",
                        timeout=TIMEOUT_S, details=dev.output)  # fmt: skip
    assert record is not None
    assert record["status"]["phase"] == "succeeded"
    assert record["payload"] == result


@pytest.mark.slow
def test_a_second_resume_is_refused(dev: Dev) -> None:
    task_id = paused(dev)
    first = dev.asya("resume", task_id, "--input", '{"approved": true}')
    assert first.returncode == 0, first.stderr

    second = dev.asya("resume", task_id, "--input", '{"approved": false}')

    assert second.returncode == 1, second.stderr
    assert "HTTP 409" in second.stderr
    assert "not_paused" in second.stderr
    task = dev.wait_status(task_id, "succeeded", "failed", "canceled")
    assert task["result"]["outcome"] == "approved"  # the first answer holds


@pytest.mark.slow
def test_a_bad_input_is_refused_naming_the_field_and_the_task_stays_paused(dev: Dev) -> None:
    task_id = paused(dev)

    wrong = dev.asya("resume", task_id, "--input", '{"approved": "yes"}')

    assert wrong.returncode == 1, wrong.stderr
    assert "input.approved" in wrong.stderr
    assert "HTTP 400" in wrong.stderr
    still = dev.task(task_id)
    assert still["status"] == "paused"
    assert still["route"]["curr"] == "x-pause"
    # Still waiting for a person, and a good answer goes through.
    assert dev.asya("resume", task_id, "--input", '{"approved": true}').returncode == 0
    assert dev.wait_status(task_id, "succeeded")["result"]["outcome"] == "approved"


@pytest.mark.slow
def test_a_score_at_the_threshold_is_stored_without_a_pause(dev: Dev) -> None:
    task_id = submit(dev, {**LOW, "verdict": "3"})

    task = dev.wait_status(task_id, "succeeded", "failed", "paused")

    assert task["status"] == "succeeded", task
    assert task["route"]["prev"] == ["classify", "gate", "store"]
    assert task["result"]["outcome"] == "passed"
    assert task["result"]["reply"] == LOW["draft"]
    assert task["result"]["needs_review"] is False


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
def test_llm_review_demo_drafts_judges_pauses_and_resumes(tmp_path: Path) -> None:
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
    # The person the demo plays, by the order of the pauses: approve, edit, decline, again.
    decisions = iter(["approved", "edited", "declined"] * len(messages))
    paused = 0
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
            assert (payload["outcome"], payload["reply"]) == ("passed", draft)
            assert " -> ".join(route) in result.stdout
        else:
            paused += 1
            assert route == [*ROUTE, *REVIEWED], payload
            assert payload["needs_review"] is True
            assert payload["review_reason"]
            # Resumed with `asya resume`, and stored as the person decided.
            assert f"asya resume {record['id']} --input '" in result.stdout
            outcome = next(decisions)
            assert payload["outcome"] == outcome, payload
            assert payload["sent"] is (outcome != "declined")
            if outcome == "approved":
                assert payload["review"] == {"approved": True}
                assert payload["reply"] == draft
            elif outcome == "edited":
                assert payload["reply"] == payload["review"]["reply"] != draft
            else:
                assert payload["reply"] is None
        assert f"{message['ticket']}  " in result.stdout
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
    assert reviewed == paused
    expected_calls = {step: len(messages) for step in [*ROUTE, "store"]}
    expected_calls["review"] = expected_calls["x-pause"] = reviewed
    assert {step: int(s["calls"]) for step, s in steps.items()} == expected_calls
    assert steps["draft"]["fly_events"] == sum(len(events[r["id"]]) for r in records)
    assert all(s["fly_events"] == 0 for step, s in steps.items() if step != "draft")
    assert steps["draft"]["seconds"] > steps["classify"]["seconds"]
    assert "token events" in result.stdout
