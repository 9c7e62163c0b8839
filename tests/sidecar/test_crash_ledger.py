"""Who is blamed for a runtime's death (asya_sidecar/crash_ledger.py), and running a
suspect's call alone (asya_sidecar/call_gate.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asya_sidecar.call_gate import CallGate
from asya_sidecar.crash_ledger import CRASH_ALONE_LIMIT, DELIVERY_BACKSTOP, CrashLedger, Verdict


def test_a_death_makes_every_envelope_in_flight_a_suspect_not_a_culprit() -> None:
    ledger = CrashLedger()
    assert not ledger.must_run_alone("good")
    assert ledger.died("good", alone=False, delivery_count=1) is Verdict.RETRY
    assert ledger.died("killer", alone=False, delivery_count=1) is Verdict.RETRY
    assert ledger.must_run_alone("good")
    assert ledger.must_run_alone("killer")
    ledger.came_through("good")
    assert not ledger.must_run_alone("good")


def test_only_deaths_alone_count_towards_failing() -> None:
    ledger = CrashLedger()
    for _ in range(DELIVERY_BACKSTOP - 2):  # shared deaths, however many, fail nobody
        assert ledger.died("x", alone=False, delivery_count=None) is Verdict.RETRY
    for _ in range(CRASH_ALONE_LIMIT - 1):
        assert ledger.died("x", alone=True, delivery_count=None) is Verdict.RETRY
    assert ledger.died("x", alone=True, delivery_count=None) is Verdict.FAIL


def test_the_delivery_count_ends_a_loop_no_single_sidecar_sees() -> None:
    # Each delivery on another replica: no ledger has seen it before.
    assert CrashLedger().died("x", alone=False, delivery_count=DELIVERY_BACKSTOP - 1) is (
        Verdict.RETRY
    )
    assert CrashLedger().died("x", alone=False, delivery_count=DELIVERY_BACKSTOP) is Verdict.FAIL


def test_the_oldest_suspects_are_forgotten_beyond_capacity() -> None:
    ledger = CrashLedger(capacity=2)
    for envelope_id in ("a", "b", "c"):
        ledger.died(envelope_id, alone=False, delivery_count=1)
    assert [ledger.must_run_alone(i) for i in ("a", "b", "c")] == [False, True, True]


async def test_a_call_alone_waits_for_the_others_and_holds_new_ones_back() -> None:
    gate = CallGate()
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def call(name: str, *, alone: bool, hold: asyncio.Event | None = None) -> None:
        async with gate.call(alone=alone):
            order.append(f"{name}+{gate.in_flight}")
            if name == "first":
                first_in.set()
            if hold is not None:
                await hold.wait()
        order.append(f"{name}-")

    first = asyncio.create_task(call("first", alone=False, hold=release_first))
    await first_in.wait()
    suspect = asyncio.create_task(call("suspect", alone=True))
    await until(lambda: gate.waiting_alone == 1)
    later = asyncio.create_task(call("later", alone=False))
    await until(lambda: gate.held_back == 1)
    assert order == ["first+1"], "neither the suspect nor a later call may start yet"
    release_first.set()
    await asyncio.gather(first, suspect, later)
    assert order == ["first+1", "first-", "suspect+1", "suspect-", "later+1", "later-"]


async def test_a_cancelled_wait_to_run_alone_lets_the_others_go() -> None:
    gate = CallGate()
    release = asyncio.Event()
    running = asyncio.Event()

    async def busy() -> None:
        async with gate.call(alone=False):
            running.set()
            await release.wait()

    holder = asyncio.create_task(busy())
    await running.wait()
    suspect = asyncio.create_task(_enter(gate, alone=True))
    await until(lambda: gate.waiting_alone == 1)
    suspect.cancel()
    await asyncio.gather(suspect, return_exceptions=True)
    await asyncio.wait_for(_enter(gate, alone=False), timeout=5)  # not held back any more
    release.set()
    await holder


async def _enter(gate: CallGate, *, alone: bool) -> None:
    async with gate.call(alone=alone):
        pass


async def until(condition: Callable[[], bool], rounds: int = 1000) -> None:
    """Let the other tasks run until `condition` holds; fail after `rounds` turns."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)  # one turn of the event loop, not a wait for time to pass
    raise AssertionError("the condition never held")
