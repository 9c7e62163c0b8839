"""The pure parts of `python -m bench`: statistics, pacing, /proc parsing, the summary."""

from __future__ import annotations

import itertools
import json
import os
import resource
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from bench import measure
from bench.__main__ import parse
from bench.suite import Ledger, Phase, envelope


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert measure.percentile(values, 0) == 1.0
    assert measure.percentile(values, 100) == 4.0
    assert measure.percentile(values, 50) == pytest.approx(2.5)
    assert measure.percentile(values, 25) == pytest.approx(1.75)


def test_percentile_of_many_and_of_one() -> None:
    values = [float(i) for i in range(1, 1001)]
    assert measure.percentile(values, 99) == pytest.approx(990.01)
    assert measure.percentile(values, 99.9) == pytest.approx(999.001)
    assert measure.percentile([7.5], 99.9) == 7.5


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="no values"):
        measure.percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        measure.percentile([1.0], 101)


def test_send_offsets_are_evenly_spaced_for_the_duration() -> None:
    offsets = measure.send_offsets(rate=200, duration=10)
    assert len(offsets) == 2000
    assert offsets[0] == 0
    assert offsets[1] == pytest.approx(0.005)
    assert offsets[-1] == pytest.approx(9.995)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(offsets)}
    assert gaps == {0.005}


def test_send_offsets_sends_at_least_one_and_refuses_bad_rates() -> None:
    assert measure.send_offsets(rate=0.5, duration=1) == [0.0]
    with pytest.raises(ValueError, match="positive"):
        measure.send_offsets(rate=0, duration=1)


def test_due_until_catches_up_after_a_late_wakeup() -> None:
    offsets = measure.send_offsets(rate=100, duration=1)  # one every 10 ms
    assert measure.due_until(offsets, 0, 0.0) == 1  # the first is due at once
    assert measure.due_until(offsets, 1, 0.0095) == 1  # nothing more yet
    assert measure.due_until(offsets, 1, 0.035) == 4  # woke late: 3 are due together
    assert measure.due_until(offsets, 4, 60.0) == 100  # never past the end


def test_steady_rate_ignores_a_burst_at_the_start() -> None:
    burst = [0.0] * 20  # piled up before the receiver looked
    steady = [i / 100 for i in range(1, 181)]  # then 100 per second
    assert measure.steady_rate(burst + steady) == pytest.approx(100, rel=0.02)
    assert measure.steady_rate([1.0, 2.0]) is None
    assert measure.steady_rate([5.0] * 50) is None


def test_messages_for_a_drain_of_some_seconds() -> None:
    assert measure.messages_for(1000, seconds=8, low=500, high=200000) == 8000
    assert measure.messages_for(10, seconds=8, low=500, high=200000) == 500
    assert measure.messages_for(1e6, seconds=8, low=500, high=1500) == 1500
    assert measure.messages_for(0, seconds=8, low=100, high=1500) == 100


def test_stat_parsing_counts_fields_after_the_command_name() -> None:
    # A command name with spaces and a ')' must not shift the fields.
    fields = ["S", *["0"] * 10, "250", "130", *["0"] * 30]
    stat = "4242 (odd) name (x)) " + " ".join(fields)
    assert measure.parse_stat_cpu(stat, 100) == pytest.approx(3.8)


def test_status_parsing_reads_vmrss() -> None:
    status = "Name:\tpython\nVmPeak:\t  99999 kB\nVmRSS:\t   51200 kB\nThreads:\t1\n"
    assert measure.parse_status_rss_mb(status) == 50.0
    assert measure.parse_status_rss_mb("Name:\tkthreadd\n") == 0.0


def test_sample_of_this_process_matches_what_the_kernel_says_elsewhere() -> None:
    sum(i * i for i in range(200_000))  # some CPU, so the count is not zero ticks
    own = measure.sample(os.getpid())
    tick = 1 / measure.clock_ticks()
    assert 0 < own.cpu_s <= time.process_time() + tick
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    assert 0 < own.rss_mb <= peak_mb + 1


def summary(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "transport": "rabbitmq",
        "messages": 10000,
        "concurrency": 16,
        "floor_rates": [1000.0, 1200.0],
        "ours_rates": [500.0, 600.0],
        "ours_3hop_rates": [200.0],
        "sequential_rates": [100.0],
        "floor_latencies_ms": [1.0, 2.0, 3.0],
        "ours_latencies_ms": [2.0, 4.0, 6.0],
        "sidecar_cpu_s_per_1k": 0.5,
        "runtime_cpu_s_per_1k": 0.25,
        "sidecar_rss_mb_idle": 40.0,
        "sidecar_rss_mb_load": 45.0,
        "lost": 0,
        "now": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    arguments.update(changes)
    return measure.summarize(**arguments)


def test_summary_has_every_required_key_and_is_json() -> None:
    result = summary(extra={"sent": 5})
    for key in (*measure.REQUIRED_KEYS, "floor_p50_ms", "ours_p50_ms", "added_p999_ms"):
        assert key in result, key
    assert json.loads(json.dumps(result)) == result
    assert result["sent"] == 5
    assert result["date"] == "2026-01-02T03:04:05+00:00"
    assert set(result["machine"]) == {"cpus", "python", "platform"}


def test_summary_ratio_and_added_latency() -> None:
    result = summary()
    assert result["floor_msgs_per_s"] == 1100.0
    assert result["ours_msgs_per_s"] == 550.0
    assert result["ratio"] == 0.5
    assert result["floor_p50_ms"] == 2.0
    assert result["ours_p50_ms"] == 4.0
    assert result["added_p50_ms"] == 2.0
    assert result["added_p99_ms"] == pytest.approx(5.96 - 2.98)


def test_summary_without_a_floor_or_latencies_says_none() -> None:
    result = summary(floor_rates=[], floor_latencies_ms=[], ours_latencies_ms=[])
    assert result["ratio"] is None
    assert result["floor_msgs_per_s"] is None
    assert result["added_p50_ms"] is None
    assert result["ours_msgs_per_s"] == 550.0


def test_ledger_counts_lost_and_duplicates() -> None:
    ledger = Ledger()
    ledger.sent.update({"a", "b", "c"})
    assert ledger.receive("a")
    assert not ledger.receive("a")
    assert ledger.receive("stray")
    assert ledger.lost == 2
    assert ledger.duplicates == 1


def test_envelope_is_about_one_kilobyte_and_carries_the_send_time() -> None:
    body = envelope("r1-floor-7", nxt=["b"], sent_at=12.5)
    assert 950 <= len(body) <= 1100
    decoded = json.loads(body)
    assert decoded["route"] == {"prev": [], "curr": "a", "next": ["b"]}
    assert decoded["payload"]["t"] == 12.5


async def test_phase_rate_latency_and_cpu_window() -> None:
    phase = Phase("r1-ours", expected=3, watch={"me": os.getpid()})
    assert phase.owns("r1-ours-0")
    assert not phase.owns("r1-ours_3hop-0")
    await phase.record(10.0, None)
    await phase.record(10.5, 10.25)
    await phase.record(11.0, None)
    assert phase.rate == pytest.approx(2.0)  # 2 intervals in 1 s
    assert phase.latencies_ms == [250.0]
    assert phase.cpu_from == 1  # opened at the first arrival: counts the 2 after it
    cpu = phase.cpu_per_1k("me")
    assert cpu is not None
    assert cpu >= 0
    await phase.wait_for(3)  # already there: returns at once


def test_command_line_defaults() -> None:
    settings = parse([])
    assert (settings.transport, settings.concurrency, settings.rounds) == ("rabbitmq", 16, 2)
    assert settings.messages == 0
    assert settings.save
    assert parse(["--transport", "local", "--messages", "300", "--no-save"]).messages == 300
