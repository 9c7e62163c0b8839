"""The daemons' pause: ends at its time, ends early on stop, and runs no task of its own
(kopf re-raised such a task's TimeoutError when the operator stopped as the wait ended)."""

from __future__ import annotations

import asyncio

from asya_operator.pause import pause


class Flag:
    def __init__(self) -> None:
        self.set = False

    def __bool__(self) -> bool:
        return self.set


async def test_runs_its_time_when_not_stopped() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await pause(Flag(), 0.3) is False
    assert loop.time() - started >= 0.3


async def test_ends_early_when_stopped() -> None:
    flag = Flag()
    asyncio.get_running_loop().call_later(0.05, setattr, flag, "set", True)
    assert await asyncio.wait_for(pause(flag, 3600), timeout=10) is True


async def test_a_stopped_flag_ends_it_at_once() -> None:
    flag = Flag()
    flag.set = True
    assert await asyncio.wait_for(pause(flag, 3600), timeout=1) is True


async def test_creates_no_task() -> None:
    before = asyncio.all_tasks()
    seen: list[set[asyncio.Task[object]]] = []

    async def watch() -> None:
        for _ in range(5):
            await asyncio.sleep(0.02)
            seen.append(asyncio.all_tasks())

    waiting = asyncio.create_task(pause(Flag(), 0.3))
    watcher = asyncio.create_task(watch())
    await asyncio.gather(waiting, watcher)
    assert seen
    for tasks in seen:
        assert tasks - before == {waiting, watcher}
