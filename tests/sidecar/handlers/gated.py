"""Handlers for the cancellation tests: one that holds an envelope until the test lets it go."""

import asyncio
import os
import time


async def gate(payload):
    """Marks that it started, then waits until the test creates payload["release"] (at most a
    minute), so the test can act while this hop is known to be under way."""
    with open(payload["started"], "w") as started:
        started.write("started")
    deadline = time.monotonic() + 60
    while not os.path.exists(payload["release"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{payload['release']} never appeared")
        await asyncio.sleep(0.02)
    return {**payload, "trail": [*payload.get("trail", []), "gate"]}
