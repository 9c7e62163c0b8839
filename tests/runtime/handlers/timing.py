"""Handlers that report when they ran, measured inside the handler, to prove overlap."""

import asyncio
import os
import time


async def async_hold(payload):
    started = time.monotonic()
    await asyncio.sleep(payload["hold_s"])
    return {"i": payload["i"], "start": started, "end": time.monotonic()}


def sync_hold(payload):
    started = time.monotonic()
    time.sleep(payload["hold_s"])
    return {"i": payload["i"], "start": started, "end": time.monotonic(), "pid": os.getpid()}


def gated(payload):
    """Signal that the call has started, then wait until the test releases it."""
    with open(payload["started"], "w") as handle:
        handle.write("started")
    deadline = time.monotonic() + payload.get("max_wait_s", 30)
    while not os.path.exists(payload["release"]):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    return {"finished": True}


async def async_sleep(payload):
    await asyncio.sleep(payload["sleep_s"])
    return {"slept": payload["sleep_s"]}


def sync_sleep(payload):
    time.sleep(payload["sleep_s"])
    return {"slept": payload["sleep_s"]}


async def async_raises_timeout(payload):
    raise TimeoutError(payload["message"])
