"""ASYA_RUNTIME_CONCURRENCY: calls overlap up to the limit, and calls over it wait.

Overlap is proven with monotonic timestamps taken inside the handlers (one clock, one
process), never with wall-clock limits on the test itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import RuntimeFactory, RuntimeProcess, async_client_for, envelope

HOLD_S = 0.3


async def invoke_all(runtime: RuntimeProcess, payloads: list[dict[str, Any]]) -> list[Any]:
    async with async_client_for(runtime.socket_path, connections=len(payloads)) as client:
        responses = await asyncio.gather(
            *(client.post("/invoke", json=envelope(p)) for p in payloads)
        )
    assert [r.status_code for r in responses] == [200] * len(payloads)
    return [r.json()["frames"][0]["payload"] for r in responses]


def most_at_once(intervals: list[dict[str, float]]) -> int:
    """The largest number of [start, end) intervals that contain one instant."""
    events = sorted(
        [(i["start"], 1) for i in intervals] + [(i["end"], -1) for i in intervals],
        key=lambda event: (event[0], event[1]),  # an end sorts before a start at a tie
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize(
    ("handler", "concurrency"), [("timing.async_hold", 8), ("timing.sync_hold", 4)]
)
def test_calls_overlap_up_to_the_limit(
    start_runtime: RuntimeFactory, handler: str, concurrency: int
) -> None:
    runtime = start_runtime(handler, concurrency=concurrency)
    payloads = [{"i": i, "hold_s": HOLD_S} for i in range(concurrency)]

    results = asyncio.run(invoke_all(runtime, payloads))

    assert sorted(r["i"] for r in results) == list(range(concurrency))
    # Every call started before any call ended: all of them ran at the same time.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)
    assert most_at_once(results) == concurrency


@pytest.mark.parametrize("handler", ["timing.async_hold", "timing.sync_hold"])
def test_calls_over_the_limit_wait_and_none_is_dropped(
    start_runtime: RuntimeFactory, handler: str
) -> None:
    runtime = start_runtime(handler, concurrency=2)
    payloads = [{"i": i, "hold_s": 0.1} for i in range(7)]

    results = asyncio.run(invoke_all(runtime, payloads))

    assert sorted(r["i"] for r in results) == list(range(7))
    assert most_at_once(results) == 2


def test_default_concurrency_is_one_call_at_a_time(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("timing.async_hold", env={"ASYA_RUNTIME_CONCURRENCY": ""})
    payloads = [{"i": i, "hold_s": 0.05} for i in range(4)]

    results = asyncio.run(invoke_all(runtime, payloads))

    assert most_at_once(results) == 1
