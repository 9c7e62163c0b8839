"""`python -m bench.table`: the README's performance table from bench/results/."""

from __future__ import annotations

import json
from pathlib import Path

from bench.table import table


def test_rows_follow_the_transport_order_with_missing_values_as_dashes(tmp_path: Path) -> None:
    (tmp_path / "sqs.json").write_text(json.dumps({"transport": "sqs", "lost": 0}))
    (tmp_path / "rabbitmq.json").write_text(
        json.dumps({
            "transport": "rabbitmq", "floor_msgs_per_s": 2090.04, "ours_msgs_per_s": 1767.7,
            "ratio": 0.846, "ours_3hop_msgs_per_s": 664.0, "sequential_msgs_per_s": 436.7,
            "added_p50_ms": 17.44, "added_p99_ms": 184.433, "sidecar_cpu_s_per_1k": 0.3441,
            "runtime_cpu_s_per_1k": 0.1019, "sidecar_rss_mb_idle": 39.8,
            "sidecar_rss_mb_load": 40.5, "lost": 0,
        })
    )  # fmt: skip

    lines = table(tmp_path).splitlines()

    assert len(lines) == 4
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2] == (
        "| rabbitmq | 2,090 | 1,768 | 0.85 | 664 | 437 | 17.4 / 184.4 | 0.34 + 0.10 | 40 / 40 | 0 |"
    )
    assert lines[3] == "| sqs (moto) | - | - | - | - | - | - / - | - + - | - / - | 0 |"
