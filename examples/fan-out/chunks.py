"""Fan-out: one document in, one envelope per chunk out, each chunk handled on its own.

split      -> cuts the document into chunks (paragraphs, long ones cut between sentences)
              and returns them as a list: the sidecar sends one envelope per item.
summarize  -> runs once per chunk, on whichever replica picks that envelope up: counts the
              words and sentences, picks keywords and a one-line summary.

No Asya import is needed: these are plain functions.
"""

from __future__ import annotations

import os
import re
import socket
from collections import Counter
from typing import Any

MAX_WORDS = 80  # a chunk never holds more words than this (unless the payload says otherwise)

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z][a-z'-]*")
_STOPWORDS_TEXT = """
a about after again all also an and any are as at be because been before being both but by
can could did do does each even every for from had has have he her here his how if in into
is it its just keep keeps like may more most much must no not now of off on once one only
or other our out over own same she should so some such than that the their them then there
these they this those through to too under until up very was we were what when where which
while who why will with would you your
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

Payload = dict[str, Any]


def _pieces(words: list[str], max_words: int) -> list[list[str]]:
    return [words[i : i + max_words] for i in range(0, len(words), max_words)]


def chunk_text(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Paragraphs of `text`; a paragraph over `max_words` is cut between sentences.

    Whitespace inside a chunk is collapsed to single spaces, so joining the chunks with
    spaces gives back every word of the document, in order.
    """
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    chunks: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        words = paragraph.split()
        if len(words) <= max_words:
            if words:
                chunks.append(" ".join(words))
            continue
        current: list[str] = []
        for sentence in _SENTENCE_END.split(" ".join(words)):
            sentence_words = sentence.split()
            if current and len(current) + len(sentence_words) > max_words:
                chunks.append(" ".join(current))
                current = []
            if len(sentence_words) > max_words:  # one sentence longer than a chunk
                *full, current = _pieces(sentence_words, max_words)
                chunks.extend(" ".join(piece) for piece in full)
            else:
                current += sentence_words
        if current:
            chunks.append(" ".join(current))
    return chunks


def split(document: Payload) -> list[Payload]:
    """One payload per chunk. Returning a list is what makes the sidecar fan out."""
    text = document.get("text")
    if not isinstance(text, str):
        raise ValueError("payload.text must be a string")
    max_words = int(document.get("max_words", MAX_WORDS))
    chunks = chunk_text(text, max_words)
    title = document.get("title", "")
    # An empty document gives an empty list: nothing continues, and the envelope is
    # recorded as succeeded.
    return [
        {"title": title, "chunk": index, "chunks": len(chunks), "text": chunk}
        for index, chunk in enumerate(chunks)
    ]


def keywords(text: str, count: int = 3) -> list[str]:
    """The most frequent words that carry meaning (ties: alphabetical order)."""
    words = [w for w in _WORD.findall(text.lower()) if len(w) > 3 and w not in STOPWORDS]
    ranked = sorted(Counter(words).items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:count]]


def summarize(chunk: Payload) -> Payload:
    """Runs once per chunk; knows nothing about the other chunks."""
    text: str = chunk["text"]
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    first = sentences[0] if sentences else ""
    return {
        **chunk,
        "words": len(text.split()),
        "sentences": len(sentences),
        "keywords": keywords(text),
        "summary": first if len(first) <= 100 else first[:99].rstrip() + "…",
        # Which process handled this chunk: on a cluster, the pod name and its pid.
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
