"""docs/reliability.md's results table (faults/table.py)."""

from __future__ import annotations

import json

from faults.table import latest, table


def line(scenario: str, transport: str, **counts: object) -> str:
    run = {
        "scenario": scenario, "transport": transport, "sent": 10, "succeeded": 10, "failed": 0,
        "in_sump": 0, "lost": 0, "duplicates": 0, "faults_injected": 2,
        "max_dup_per_fault": 0, "seconds": 12.3, "passed": True, "problems": [],
    }  # fmt: skip
    return json.dumps({**run, **counts})


def test_a_rerun_replaces_the_earlier_line_and_rows_follow_the_docs_order() -> None:
    lines = [
        "faults: progress lines on stderr are ignored",
        line("poison", "local"),
        line("sidecar-kill", "sqs", duplicates=3),
        line("sidecar-kill", "rabbitmq", lost=1, passed=False, problems=["1 envelope(s) lost"]),
        line("sidecar-kill", "rabbitmq"),
    ]
    rows = table(latest(lines)).splitlines()[2:]
    assert [r.split(" | ")[:2] for r in rows] == [
        ["| `sidecar-kill`", "rabbitmq"],
        ["| `sidecar-kill`", "sqs"],
        ["| `poison`", "local"],
    ]
    assert rows[0].endswith("| **0** | 0 | 2 | 0 | 12 | yes |")


def test_a_failed_run_says_why() -> None:
    rows = table(latest([line("poison", "sqs", passed=False, problems=["a", "b"])]))
    assert rows.splitlines()[-1].endswith("| no: a; b |")
