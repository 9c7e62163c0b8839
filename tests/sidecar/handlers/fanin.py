"""Handlers of the fan-out / x-join tests (run by the real runtime)."""

import os


def split(payload):
    """One part per word; the join's options come from the payload when it names them."""
    if "join" in payload:
        yield "SET", ".headers.x-asya-join", payload["join"]
    for word in payload["text"].split():
        yield {"word": word}


def split_n(payload):
    """`n` numbered parts, for the big joins."""
    return [{"i": i} for i in range(payload["n"])]


def shout(payload):
    """A part's work: fails on the word "boom", never arrives for "lost"."""
    word = payload.get("word")
    if word == "boom":
        raise ValueError("cannot shout boom")
    if word == "lost":
        return None  # ends here: x-join never hears of this part
    return word.upper() if word is not None else payload["i"] * 2


def combine(payload):
    results = payload.get("results") or payload.get("out", {}).get("shouted") or []
    return {**payload, "combined": " ".join(str(r) for r in results)}


def chunk(payload):
    """A part that fans out again (nested join): one sub-part per letter."""
    return [{"letter": letter} for letter in payload["word"]]


def letter(payload):
    return payload["letter"].upper()


def glue(payload):
    """After the inner join: the letters back into one word."""
    return "".join(payload["results"])


def record_call(payload):
    """The last hop of the big joins: appends the origin id to a file, one line per call,
    so a test counts how many joined envelopes reached it."""
    task = yield "GET", ".id"
    with open(os.environ["ASYA_TEST_CALLS_FILE"], "a") as calls:
        calls.write(f"{task}\n")
    yield {"count": len(payload["results"]), "sum": sum(payload["results"])}


def fat(payload):
    """A part's result of 30 kB: each fits an SQS message (1 MiB), forty together do not."""
    return "x" * 30_000
