"""Waiting on whichever of several asyncio events happens first, with an optional timeout."""

from __future__ import annotations

import asyncio


async def first_of(*events: asyncio.Event, timeout: float | None = None) -> bool:
    """Wait until one of `events` is set or `timeout` passes; True if the FIRST one is set."""
    if any(event.is_set() for event in events):
        return events[0].is_set()
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return events[0].is_set()
