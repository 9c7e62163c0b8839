"""Every example runs, the way its README says."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import wait_until

EXAMPLES = Path(__file__).parent.parent / "examples"
ASYA = str(Path(sys.executable).with_name("asya"))

pytestmark = pytest.mark.slow


def test_ticket_router_demo_routes_unsure_tickets_through_review() -> None:
    result = subprocess.run(
        [sys.executable, "demo.py"],
        cwd=EXAMPLES / "ticket-router",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("(succeeded)") == 5
    assert "route   classify -> review -> respond" in result.stdout
    assert "route   classify -> respond" in result.stdout
    assert "asya dev stopped cleanly" in result.stdout


# --- helpers for the examples below ---------------------------------------------------------


def run_demo(example: str, state_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python demo.py --state-dir DIR` in the example's directory; asserts it exits 0."""
    result = subprocess.run(
        [sys.executable, "demo.py", "--state-dir", str(state_dir)],
        cwd=EXAMPLES / example,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "asya dev stopped cleanly" in result.stdout
    return result


def stored_results(state_dir: Path) -> list[dict[str, Any]]:
    """Every final envelope x-sink stored under `asya dev --state-dir`."""
    return [json.loads(path.read_text()) for path in sorted((state_dir / "results").glob("*.json"))]


@contextmanager
def asya_dev(example: str, state_dir: Path) -> Iterator[None]:
    """`asya dev .` in the example's directory, from its ready line until a clean Ctrl-C."""
    proc = subprocess.Popen(
        [ASYA, "dev", ".", "--state-dir", str(state_dir)],
        cwd=EXAMPLES / example,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def follow() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if line.startswith("asya dev: ready"):
                ready.set()

    def up() -> bool:
        assert proc.poll() is None, "asya dev exited:\n" + "".join(log)
        return ready.is_set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        wait_until(
            up,
            what="asya dev's ready line",
            timeout=120,
            interval=0.1,
            details=lambda: "".join(log),
        )
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        reader.join(timeout=10)
    assert code == 0, "asya dev did not stop cleanly:\n" + "".join(log[-40:])


def asya_send(example: str, route: str, payload: Any, state_dir: Path) -> dict[str, Any]:
    """`asya send ROUTE --payload JSON --wait 60`: the final envelope of a succeeded run."""
    command = [ASYA, "send", route, "--payload", json.dumps(payload), "--wait", "60"]
    result = subprocess.run(
        [*command, "--state-dir", str(state_dir)],
        cwd=EXAMPLES / example,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    final: dict[str, Any] = json.loads(result.stdout)
    return final


# --- semantic-triage: a real embedding model in an actor ------------------------------------

CLEAR = {
    "T-101": "billing",
    "T-102": "billing",
    "T-103": "outage",
    "T-104": "outage",
    "T-105": "account_access",
    "T-106": "account_access",
    "T-107": "feature_request",
    "T-108": "feature_request",
}
UNSURE = {"T-109", "T-110", "T-111"}


def norm(vector: Sequence[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / (norm(a) * norm(b))


@pytest.mark.timeout(400)
def test_semantic_triage_classifies_with_the_model_and_reviews_the_unsure(tmp_path: Path) -> None:
    result = run_demo("semantic-triage", tmp_path, timeout=360)
    records = stored_results(tmp_path)
    assert all(r["status"]["phase"] == "succeeded" for r in records), records
    tickets = {r["payload"]["ticket"]: r for r in records if "ticket" in r["payload"]}
    samples = (EXAMPLES / "semantic-triage" / "samples.jsonl").read_text().splitlines()
    assert set(tickets) == set(CLEAR) | UNSURE
    assert len(tickets) == len([line for line in samples if line.strip()])

    for ticket, label in CLEAR.items():
        payload, route = tickets[ticket]["payload"], tickets[ticket]["route"]["prev"]
        assert (payload["label"], route) == (label, ["embed", "classify", "store"]), payload
        assert payload["needs_review"] is False
        assert payload["confident"] is True
        assert payload["score"] == max(payload["scores"].values())
        assert payload["margin"] >= payload["thresholds"]["min_margin"]
    for ticket in UNSURE:
        payload, route = tickets[ticket]["payload"], tickets[ticket]["route"]["prev"]
        assert route == ["embed", "classify", "review", "store"], (ticket, payload)
        assert payload["needs_review"] is True
        assert payload["review_reason"]
    # Charged, then locked out: both readings are plausible, and the model says so.
    mixed = tickets["T-109"]["payload"]
    assert {mixed["label"], mixed["runner_up"]} == {"billing", "account_access"}
    assert mixed["margin"] < 0.1
    # Off-topic: no label fits.
    off_topic = tickets["T-111"]["payload"]
    assert off_topic["score"] < off_topic["thresholds"]["min_score"]
    for record in tickets.values():
        assert "embedding" not in record["payload"]  # store keeps the final record small
        assert set(record["payload"]["scores"]) == set(CLEAR.values())
        assert record["headers"]["triage-label"] == record["payload"]["label"]

    # The probes went through `embed` alone: real all-MiniLM-L6-v2 vectors, unit length,
    # a paraphrase close by and an unrelated sentence far away.
    probes = {
        r["payload"]["text"]: r["payload"]["embedding"]
        for r in records
        if r["route"]["prev"] == ["embed"]
    }
    assert len(probes) == 3
    for vector in probes.values():
        assert len(vector) == 384
        assert abs(norm(vector) - 1.0) < 1e-3
    anchor = probes["How do I reset my password?"]
    near = cosine(anchor, probes["I forgot my password, how can I change it?"])
    far = cosine(anchor, probes["The weather in Lisbon is lovely today."])
    assert near > 0.75, near
    assert far < 0.25, far

    assert "T-109  billing" in result.stdout
    assert result.stdout.count("embed -> classify -> review -> store") == len(UNSURE)
    assert result.stdout.count("embed -> classify -> store") == len(CLEAR)


# --- fan-out: one document, one envelope per chunk ------------------------------------------


def check_fan_out(records: list[dict[str, Any]], chunks: Sequence[str]) -> None:
    """One succeeded envelope per chunk: distinct fan-out ids, each chunk's own result."""
    [first] = [r for r in records if r["parent_id"] is None]
    root = first["id"]
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records) == len(chunks)
    assert set(by_id) == {root} | {f"{root}-{i}" for i in range(1, len(chunks))}
    for index, text in enumerate(chunks):
        record = by_id[root if index == 0 else f"{root}-{index}"]
        payload = record["payload"]
        assert record["parent_id"] == (None if index == 0 else root)
        assert record["route"]["prev"] == ["split", "summarize"]
        assert record["status"]["phase"] == "succeeded"
        assert (payload["chunk"], payload["chunks"]) == (index, len(chunks))
        assert payload["text"] == text
        assert payload["words"] == len(text.split())
        assert payload["summary"].rstrip("…") in text
        assert payload["keywords"]
        assert all(k in text.lower() for k in payload["keywords"])


def test_fan_out_demo_returns_one_result_per_chunk(tmp_path: Path) -> None:
    result = run_demo("fan-out", tmp_path, timeout=100)
    records = stored_results(tmp_path)
    body = (EXAMPLES / "fan-out" / "document.txt").read_text().partition("\n\n")[2]
    paragraphs = [p for p in body.split("\n\n") if p.strip()]

    ordered = sorted(records, key=lambda r: r["payload"]["chunk"])
    texts = [r["payload"]["text"] for r in ordered]
    # Together the chunks are the whole document, word for word, in order; the one
    # paragraph over 80 words was cut in two between sentences.
    assert " ".join(texts).split() == body.split()
    assert len(texts) == len(paragraphs) + 1
    assert all(len(text.split()) <= 80 for text in texts)
    check_fan_out(records, texts)
    assert f"{len(texts)} chunks -> {len(texts)} envelopes with distinct ids" in result.stdout


def test_fan_out_sends_every_chunk_of_a_long_document_on_its_own(tmp_path: Path) -> None:
    # 5 paragraphs of 6 sentences of 6 words: with max_words=10 every sentence is a chunk.
    sentences = [
        [f"Paragraph {p} sentence {s} mentions {word}." for s, word in enumerate(words)]
        for p, words in enumerate(
            [["apples", "boats", "clouds", "dunes", "eagles", "ferns"]] * 5, start=1
        )
    ]
    text = "\n\n".join(" ".join(paragraph) for paragraph in sentences)
    expected = [sentence for paragraph in sentences for sentence in paragraph]

    with asya_dev("fan-out", tmp_path):
        first = asya_send(
            "fan-out", "split,summarize", {"title": "t", "text": text, "max_words": 10}, tmp_path
        )
        assert first["payload"]["chunks"] == len(expected) == 30
        results = [tmp_path / "results" / f"{first['id']}-{i}.json" for i in range(1, 30)]
        wait_until(
            lambda: all(path.exists() for path in results),
            what="the other 29 chunks to be stored",
            timeout=60,
            details=lambda: "missing: " + ", ".join(p.name for p in results if not p.exists()),
        )

    check_fan_out(stored_results(tmp_path), expected)
