"""Waiting in tests: poll a condition until it holds, or fail at a deadline naming what was
awaited. The one place for "wait until this is true"; tests never sleep a fixed time instead.

`wait_until` is for plain code (and threads), `eventually` for coroutines; it accepts a sync
or an async predicate. Both return the first truthy value, so a predicate may hand back
what it found:

    actor = await eventually(lambda: api.get(name), what="the AsyncActor", ignore=NotFound)

`ignore` lists exceptions that count as "not yet" (the last one is shown on timeout); any
other exception fails at once. `details` is called on timeout and its text appended, for a
log tail or a listing that only makes sense at that moment.

No pytest here: services.py waits with it, and the benches import services.py.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

# Generous: only a failing test waits this long, and the CI machines are small.
DEFAULT_TIMEOUT_S = 60.0
# Short enough not to slow a test down, long enough not to busy-loop a shared CPU.
DEFAULT_INTERVAL_S = 0.02

Ignored = type[BaseException] | tuple[type[BaseException], ...]


def wait_until(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    ignore: Ignored = (),
    details: Callable[[], str] | None = None,
) -> T:
    """Call `condition` until it returns something truthy and return that; raise
    AssertionError naming `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: object = condition()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]  # it is the T the condition returned
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(what, timeout, last, details))
        time.sleep(interval)


@overload
async def eventually(
    condition: Callable[[], Awaitable[T]],
    what: str,
    *,
    timeout: float = ...,
    interval: float = ...,
    ignore: Ignored = ...,
    details: Callable[[], str] | None = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = ...,
    interval: float = ...,
    ignore: Ignored = ...,
    details: Callable[[], str] | None = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], Awaitable[T]] | Callable[[], T],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    ignore: Ignored = (),
    details: Callable[[], str] | None = None,
) -> T:
    """`wait_until` for coroutines: `condition` may be sync or async; the loop keeps running
    between polls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: object = condition()
            if inspect.isawaitable(last):
                last = await last
        except ignore as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]  # it is the T the condition returned
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(what, timeout, last, details))
        await asyncio.sleep(interval)


def _timed_out(what: str, timeout: float, last: object, details: Callable[[], str] | None) -> str:
    message = f"timed out after {timeout}s waiting for {what}"
    if last is not None and not isinstance(last, bool):  # a bare False says nothing
        message += f"; last: {last!r}"
    if details is not None:
        message += f"\n{details()}"
    return message
