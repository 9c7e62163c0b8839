"""docs/reliability.md's results table from the JSON lines of `python -m faults`:

    python -m faults --profile long > runs.jsonl; python -m faults.table runs.jsonl [...]

A later line for the same scenario and transport replaces an earlier one (a re-run).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from faults.brokers import TRANSPORTS
from faults.scenarios import registry

HEADER = (
    "| scenario | transport | sent | succeeded | failed | in x-sump | lost | duplicates "
    "| faults | max dup / fault | seconds | passed |"
)


def latest(lines: Iterable[str]) -> dict[tuple[str, str], dict[str, Any]]:
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            run = json.loads(line)
            runs[(run["scenario"], run["transport"])] = run
    return runs


def table(runs: dict[tuple[str, str], dict[str, Any]]) -> str:
    order = {name: i for i, name in enumerate(registry())}  # the docs' order
    keys = sorted(runs, key=lambda k: (order.get(k[0], len(order)), TRANSPORTS.index(k[1]), k))
    rows = [HEADER, "|" + " --- |" * HEADER.count(" | ") + " --- |"]
    for key in keys:
        run = runs[key]
        cells = [
            f"`{run['scenario']}`", run["transport"], f"{run['sent']:,}", f"{run['succeeded']:,}",
            f"{run['failed']:,}", f"{run['in_sump']:,}", f"**{run['lost']}**",
            f"{run['duplicates']:,}", f"{run['faults_injected']:,}",
            str(run["max_dup_per_fault"]), f"{run['seconds']:,.0f}",
            "yes" if run.get("passed") else f"no: {'; '.join(run.get('problems', []))}",
        ]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    lines: list[str] = []
    for name in argv or ["-"]:
        lines += sys.stdin.readlines() if name == "-" else Path(name).read_text().splitlines()
    print(table(latest(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
