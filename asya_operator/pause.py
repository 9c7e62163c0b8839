"""The pause between rounds of a periodic daemon, ended early when the operator stops.

kopf's own `await stopped.wait(n)` runs the wait in a task of its own. When the operator
stops just as that wait times out, kopf collects the task among the ones still running and
re-raises its `TimeoutError` from `kopf.operator()`, so a clean shutdown fails. Polling the
flag costs a wake-up per `POLL_S` and creates no task.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["POLL_S", "Stopped", "pause"]

POLL_S = 0.25


class Stopped(Protocol):
    """What a kopf daemon gets as `stopped`: true once it should exit."""

    def __bool__(self) -> bool: ...


async def pause(stopped: Stopped, seconds: float) -> bool:
    """Sleep `seconds`, or less when `stopped` turns true; answers whether it did."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while not stopped:
        left = until - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(left, POLL_S))
    return True
