"""The README's performance table, from bench/results/<transport>.json: `python -m bench.table`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ORDER = ("rabbitmq", "local", "pubsub", "sqs")
LABELS = {"pubsub": "pubsub (emulator)", "sqs": "sqs (moto)"}
HEADER = (
    "| transport | floor msg/s | ours msg/s | ratio | 3 hops | sequential "
    "| added p50 / p99 ms | sidecar + runtime CPU ms / msg | sidecar RSS MB idle / load | lost |"
)


def number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def row(summary: dict[str, Any]) -> str:
    transport = summary["transport"]
    cpu = [summary.get("sidecar_cpu_s_per_1k"), summary.get("runtime_cpu_s_per_1k")]
    rss = [summary.get("sidecar_rss_mb_idle"), summary.get("sidecar_rss_mb_load")]
    added = [summary.get("added_p50_ms"), summary.get("added_p99_ms")]
    cells = [
        LABELS.get(transport, transport),
        number(summary.get("floor_msgs_per_s")),
        number(summary.get("ours_msgs_per_s")),
        number(summary.get("ratio"), 2),
        number(summary.get("ours_3hop_msgs_per_s")),
        number(summary.get("sequential_msgs_per_s")),
        " / ".join(number(value, 1) for value in added),
        " + ".join(number(value, 2) for value in cpu),
        " / ".join(number(value) for value in rss),
        str(summary.get("lost", "-")),
    ]
    return "| " + " | ".join(cells) + " |"


def table(directory: Path = RESULTS) -> str:
    lines = [HEADER, "|" + " --- |" * HEADER.count(" | ") + " --- |"]
    for transport in ORDER:
        path = directory / f"{transport}.json"
        if path.exists():
            lines.append(row(json.loads(path.read_text())))
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
