"""The pure parts of the bench suite: percentiles, the open-loop send schedule, CPU and memory
of a process read from /proc, and the summary line. No broker, no processes started here."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The keys every summary carries (checked by the tests; the README documents them).
REQUIRED_KEYS = (
    "transport",
    "messages",
    "concurrency",
    "floor_msgs_per_s",
    "ours_msgs_per_s",
    "ratio",
    "ours_3hop_msgs_per_s",
    "sequential_msgs_per_s",
    "added_p50_ms",
    "added_p99_ms",
    "added_p999_ms",
    "floor_p50_ms",
    "ours_p50_ms",
    "sidecar_cpu_s_per_1k",
    "runtime_cpu_s_per_1k",
    "sidecar_rss_mb_idle",
    "sidecar_rss_mb_load",
    "lost",
    "machine",
    "date",
)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, interpolating linearly between the two
    nearest ranks (the method numpy calls 'linear'). Raises ValueError when empty."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def send_offsets(rate: float, duration: float) -> list[float]:
    """When each message of an open-loop run is due, in seconds from its start: one every
    1/rate seconds, for `duration` seconds, whatever happens to earlier messages."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive, got {rate} and {duration}")
    count = max(1, math.floor(rate * duration))
    return [i / rate for i in range(count)]


def due_until(offsets: Sequence[float], start: int, elapsed: float) -> int:
    """The index after the last message due at `elapsed` seconds, looking from `start`: the
    sender sends offsets[start:result] now (catching up at once if it woke up late)."""
    end = start
    while end < len(offsets) and offsets[end] <= elapsed:
        end += 1
    return end


def steady_rate(times: Sequence[float], low: float = 10, high: float = 90) -> float | None:
    """Arrivals per second between the `low`-th and the `high`-th percentile arrival (by
    count) of sorted arrival `times`; None with fewer than 10 arrivals or no time between."""
    if len(times) < 10:
        return None
    first = math.floor((len(times) - 1) * low / 100)
    last = math.ceil((len(times) - 1) * high / 100)
    span = times[last] - times[first]
    return (last - first) / span if span > 0 else None


def messages_for(rate: float, *, seconds: float, low: int, high: int) -> int:
    """How many messages make a backlog drain last about `seconds` at `rate` msgs/s."""
    if rate <= 0:
        return low
    return max(low, min(high, math.ceil(rate * seconds)))


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float  # user + system CPU of the whole process (all threads)
    rss_mb: float


def parse_stat_cpu(stat: str, clock_ticks: int) -> float:
    """utime + stime, in seconds, from the text of /proc/<pid>/stat.

    The second field (the command name, in parentheses) may itself contain spaces and
    parentheses, so fields are counted from the last ')'. utime and stime are fields 14 and 15
    (1-based) of proc(5): the 12th and 13th after the state field.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / clock_ticks


def parse_status_rss_mb(status: str) -> float:
    """VmRSS from the text of /proc/<pid>/status, in MiB (0 for a process without memory)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            kib = int(line.split()[1])
            return kib / 1024
    return 0.0


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def sample(pid: int) -> ProcSample:
    proc = Path("/proc") / str(pid)
    return ProcSample(
        cpu_s=parse_stat_cpu((proc / "stat").read_text(), clock_ticks()),
        rss_mb=parse_status_rss_mb((proc / "status").read_text()),
    )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _latency(samples: Sequence[float], q: float) -> float | None:
    return percentile(samples, q) if samples else None


def _diff(ours: float | None, floor: float | None) -> float | None:
    return None if ours is None or floor is None else ours - floor


def summarize(
    *,
    transport: str,
    messages: int,
    concurrency: int,
    floor_rates: Sequence[float],
    ours_rates: Sequence[float],
    ours_3hop_rates: Sequence[float],
    sequential_rates: Sequence[float],
    floor_latencies_ms: Sequence[float],
    ours_latencies_ms: Sequence[float],
    sidecar_cpu_s_per_1k: float | None,
    runtime_cpu_s_per_1k: float | None,
    sidecar_rss_mb_idle: float | None,
    sidecar_rss_mb_load: float | None,
    lost: int,
    extra: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The summary line: rates are the mean over rounds, latencies are percentiles of every
    sample of every round, `added_*` is ours minus the floor at the same percentile."""
    floor, ours = mean(floor_rates), mean(ours_rates)
    ratio = ours / floor if ours is not None and floor else None
    result: dict[str, Any] = {
        "transport": transport,
        "messages": messages,
        "concurrency": concurrency,
        "floor_msgs_per_s": _round(floor, 1),
        "ours_msgs_per_s": _round(ours, 1),
        "ratio": _round(ratio, 3),
        "ours_3hop_msgs_per_s": _round(mean(ours_3hop_rates), 1),
        "sequential_msgs_per_s": _round(mean(sequential_rates), 1),
    }
    for name, q in (("p50", 50.0), ("p99", 99.0), ("p999", 99.9)):
        floor_ms = _latency(floor_latencies_ms, q)
        ours_ms = _latency(ours_latencies_ms, q)
        result[f"added_{name}_ms"] = _round(_diff(ours_ms, floor_ms), 3)
        result[f"floor_{name}_ms"] = _round(floor_ms, 3)
        result[f"ours_{name}_ms"] = _round(ours_ms, 3)
    result.update({
        "sidecar_cpu_s_per_1k": _round(sidecar_cpu_s_per_1k, 4),
        "runtime_cpu_s_per_1k": _round(runtime_cpu_s_per_1k, 4),
        "sidecar_rss_mb_idle": _round(sidecar_rss_mb_idle, 1),
        "sidecar_rss_mb_load": _round(sidecar_rss_mb_load, 1),
        "lost": lost,
    })  # fmt: skip
    result.update(extra or {})
    result["machine"] = machine()
    result["date"] = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    return result
