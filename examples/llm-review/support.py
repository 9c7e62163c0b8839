"""The small handlers around the two model calls of the llm-review pipeline.

classify  -> a keyword rule (no model): billing, outage, account or other.
draft     -> not here: asya_callers.openai.Chat.handle, configured in actors.yaml.
judge     -> not here either: the same caller class with its own prompt.
gate      -> reads a 1-5 score out of the judge's free text and picks the rest of the route:
             `store` when the score reaches REVIEW_THRESHOLD, else `review`, `x-pause` and
             `store`.
review    -> marks the message for a person, says why, and tells x-pause what to ask.
x-pause   -> not here: Asya's crew keeps the task `paused` until a person resumes it
             (`asya resume ID --input '{"approved": true}'`), with no worker held meanwhile.
store     -> sends what was decided (the draft, the person's reply, or nothing) and keeps the
             final record, which x-sink stores.

No Asya import is needed: plain functions and one class, standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterable
from typing import Any, NamedTuple

__all__ = [
    "CATEGORIES",
    "DEFAULT_THRESHOLD",
    "REVIEW_ROUTE",
    "Decision",
    "Gate",
    "Score",
    "classify",
    "decide",
    "parse_score",
    "review",
    "review_pause",
    "review_reason",
    "store",
]

Payload = dict[str, Any]

# Checked in this order; a message matching none is `other`.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "billing": (
        "invoice", "refund", "charge", "charged", "payment", "paid", "bill", "billed",
        "price", "subscription", "card",
    ),
    "outage": (
        "down", "outage", "error", "500", "502", "503", "crash", "crashes", "crashed",
        "unavailable", "timeout", "times out", "broken", "blank page",
    ),
    "account": (
        "password", "login", "log in", "sign in", "account", "email", "2fa", "locked",
        "username", "authenticator",
    ),
}  # fmt: skip
DEFAULT_THRESHOLD = 3
# What follows `gate` for a draft under the threshold: `review` says what to ask, `x-pause`
# waits for the person's answer, `store` acts on it.
REVIEW_ROUTE = ["review", "x-pause", "store"]
PAUSE_HEADER = "x-asya-pause"


def classify(payload: Payload) -> Payload:
    """Adds `category`: the category whose keywords the text mentions most."""
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            'classify needs a payload like {"text": "the customer\'s message"}; '
            f"got {_preview(payload)}"
        )
    lowered = text.lower()
    hits = {
        category: sum(len(re.findall(rf"\b{re.escape(k)}\b", lowered)) for k in keywords)
        for category, keywords in CATEGORIES.items()
    }
    best = max(hits, key=lambda category: hits[category])
    return {**payload, "category": best if hits[best] else "other"}


# --- reading the judge's answer ------------------------------------------------------------


class Score(NamedTuple):
    value: int  # 1-5, or 0 when the answer holds no score
    source: str  # which rule found it: fraction, digit, word, stars or none


NO_SCORE = Score(0, "none")
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
# The scale itself, often echoed from the prompt ("from 1 (bad) to 5 (excellent)"): its
# digits are not a score, so it is cut out before anything else is read.
_SCALE = re.compile(r"\b[01]\s*(?:\([^)]{0,20}\)\s*)?(?:-|\u2013|to)\s*(?:5|10)\b(?!\s*/)")
_FRACTION = re.compile(r"(?<![\d.])(\d{1,2}(?:\.\d+)?)\s*(?:/|out of)\s*(5|10)(?!\d|\.\d)")
_DIGIT = re.compile(r"(?<![\d.])([1-5])(?![\d]|\.\d)")
_WORD = re.compile(
    r"(?:\b(?:score|scored|rating|rated|rate|grade|give)"
    r"(?:\s+(?:it|this|the draft|the reply|a|an|of|is))*\s*[:=]?\s*"
    r"(one|two|three|four|five)\b)"
    r"|(?:\b(one|two|three|four|five)\s*(?:/|out of|stars?|points?)\b)"
)
_STARS = re.compile(r"[★⭐]{1,5}")
# "Customer message: ..." copied from the prompt: the label is the prompt's, the rest the input's.
_LABEL = re.compile(r"^\s*[A-Za-z][A-Za-z ]{0,30}:\s*")
MIN_ECHO = 8  # shorter pieces ("4", "Good.") are the model's own, even if the input has them


def parse_score(answer: str, echoes: Iterable[str] = ()) -> Score:
    """The 1-5 score in a small model's free-text verdict, or Score(0, "none").

    Lines of the answer that repeat one of `echoes` (the message and the draft it judged,
    after a "Label:" of the prompt's) are dropped first: small models copy their input, and
    a digit they copied is not a score. Then, on the rest with the scale itself ("1 to 5",
    "1-5") removed, tried in order: a fraction ("4/5", "3.5 out of 5", "8/10", scaled to
    1-5); the first lone digit 1-5 (not part of "10", "2024" or "4.5"); a number word next
    to a score word ("score: four", "four out of five"), or the whole answer being one; a
    row of stars.
    """
    answer = _without_echoes(answer, [" ".join(e.lower().split()) for e in echoes])
    text = _SCALE.sub(" ", answer.lower())
    fraction = _FRACTION.search(text)
    if fraction:
        value, scale = float(fraction.group(1)), int(fraction.group(2))
        if 0 < value <= scale:
            return Score(max(1, min(5, int(value * 5 / scale + 0.5))), "fraction")
    digit = _DIGIT.search(text)
    if digit:
        return Score(int(digit.group(1)), "digit")
    bare = text.strip(" \t\n.!*\"'")
    if bare in _WORDS:
        return Score(_WORDS[bare], "word")
    word = _WORD.search(text)
    if word:
        return Score(_WORDS[word.group(1) or word.group(2)], "word")
    stars = _STARS.search(answer)
    if stars:
        return Score(len(stars.group(0)), "stars")
    return NO_SCORE


def _without_echoes(answer: str, echoes: list[str]) -> str:
    kept = []
    for line in answer.splitlines():
        copied = " ".join(_LABEL.sub("", line).lower().split())
        if len(copied) >= MIN_ECHO and any(copied in echo for echo in echoes):
            continue
        kept.append(line)
    return "\n".join(kept)


# --- steering -------------------------------------------------------------------------------


class Gate:
    """Reads REVIEW_THRESHOLD once, when the actor starts."""

    def __init__(self) -> None:
        raw = os.environ.get("REVIEW_THRESHOLD", str(DEFAULT_THRESHOLD)).strip()
        if not raw.isdigit() or not 1 <= int(raw) <= 5:
            raise ValueError(
                f"REVIEW_THRESHOLD={raw!r} must be a whole number from 1 to 5: the lowest "
                "judge score at which a draft skips human review"
            )
        self.threshold = int(raw)

    def gate(self, payload: Payload) -> Generator[Any, Any, None]:
        verdict = payload.get("verdict") if isinstance(payload, dict) else None
        if not isinstance(verdict, str):
            raise ValueError(
                "gate needs the judge's answer as a string in payload.verdict (is `judge` "
                f"before `gate` in the route?); got {_preview(payload)}"
            )
        score = parse_score(verdict, echoes=[str(payload.get("text")), str(payload.get("draft"))])
        passed = score.value >= self.threshold
        # Whatever the sender put after `gate` still runs, after these.
        yield "SET", ".route.next[:0]", ["store"] if passed else REVIEW_ROUTE
        yield {
            **payload,
            "score": score.value,
            "score_source": score.source,
            "threshold": self.threshold,
            "passed": passed,
        }


def review(payload: Payload) -> Generator[Any, Any, None]:
    """Hands the draft to a person before anything reaches the customer: says why, and
    sets the header that tells x-pause (next in the route) what to ask."""
    reason = review_reason(payload)
    yield "SET", f".headers.{PAUSE_HEADER}", review_pause(payload, reason)
    yield {**payload, "needs_review": True, "review_reason": reason}


def review_reason(payload: Payload) -> str:
    if payload["score_source"] == "none":
        return f"the judge's answer holds no 1-5 score: {payload['verdict'][:80]!r}"
    return (
        f"the judge scored the draft {payload['score']}/5, below the threshold "
        f"{payload['threshold']}"
    )


def review_pause(payload: Payload, reason: str) -> dict[str, Any]:
    """The `x-asya-pause` header: the question for the person, and where each answer goes
    in the payload (under `review`, which `store` reads)."""
    ticket = f"ticket {payload['ticket']}" if payload.get("ticket") else "a message"
    category = f" ({payload['category']})" if payload.get("category") else ""
    prompt = (
        f"{reason[:1].upper()}{reason[1:]}.\n"
        f"Customer, {ticket}{category}: {payload.get('text', '')}\n"
        f"Draft reply: {payload.get('draft', '')}"
    )
    return {
        "prompt": prompt,
        "fields": [
            {
                "name": "approved",
                "type": "boolean",
                "prompt": "Send the draft as it is?",
                "payload_key": "/review/approved",
            },
            {
                "name": "reply",
                "type": "string",
                "required": False,
                "prompt": "Your reply instead of the draft",
                "payload_key": "/review/reply",
            },
        ],
    }


class Decision(NamedTuple):
    outcome: str  # passed (the judge's score sufficed), approved, edited or declined
    reply: str | None  # what goes to the customer; None: nothing is sent


def decide(payload: Payload) -> Decision:
    """What reaches the customer. A draft that passed the judge is sent. After a review the
    person decides: a reply of their own is sent instead of the draft (whatever `approved`
    says: they wrote it to be sent), else the draft if they approved it, else nothing."""
    draft = payload.get("draft")
    if not payload.get("needs_review"):
        return Decision("passed", draft if isinstance(draft, str) else None)
    answer = payload.get("review")
    approved = answer.get("approved") if isinstance(answer, dict) else None
    if not isinstance(approved, bool):
        raise ValueError(
            "store: the draft went to review but payload.review.approved holds no person's "
            f"decision (got {_preview(answer)}); route it through x-pause after `review` and "
            "resume the task with `asya resume ID --input '{\"approved\": true}'`"
        )
    edited = answer.get("reply") if isinstance(answer, dict) else None
    if isinstance(edited, str) and edited.strip():
        return Decision("edited", edited)
    if approved:
        return Decision("approved", draft if isinstance(draft, str) else None)
    return Decision("declined", None)


def store(payload: Payload) -> Payload:
    """The final record, with what was sent (`reply`, `sent`) and why (`outcome`); x-sink
    stores it under the envelope id."""
    decision = decide(payload)
    return {
        "needs_review": False,
        **payload,
        "outcome": decision.outcome,
        "sent": decision.reply is not None,
        "reply": decision.reply,
    }


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
