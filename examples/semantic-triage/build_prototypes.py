"""Rebuild prototypes.json from triage.LABEL_EXAMPLES with the same model `embed` runs.

    ../../.venv/bin/python build_prototypes.py

A label's prototype is the normalised mean of its example phrases' embeddings. `classify`
refuses to start when the file was built from other phrases than the ones in triage.py.
"""

from __future__ import annotations

import json
import re
import sys

import triage


def build(embedder: triage.Embedder) -> dict[str, object]:
    labels: dict[str, object] = {}
    for label, examples in triage.LABEL_EXAMPLES.items():
        vectors = embedder.vectors(examples)
        mean = [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]
        prototype = [round(x, 6) for x in triage.normalise(mean)]
        labels[label] = {"examples": examples, "prototype": prototype}
    return {
        "model": triage.MODEL_NAME,
        "dimensions": triage.DIMENSIONS,
        "examples_sha256": triage.examples_digest(triage.LABEL_EXAMPLES),
        "labels": labels,
    }


def dumps(data: dict[str, object]) -> str:
    """Indented JSON, except that every list of numbers stays on one line."""
    numbers = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")
    text = json.dumps(data, indent=1)
    return numbers.sub(lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text)


def main() -> int:
    data = build(triage.Embedder())
    triage.PROTOTYPES_FILE.write_text(dumps(data) + "\n")
    print(f"wrote {triage.PROTOTYPES_FILE} ({len(triage.LABEL_EXAMPLES)} labels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
