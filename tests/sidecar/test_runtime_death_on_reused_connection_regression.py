"""Regression: a runtime that dies during a call made on a kept-alive connection (the one the
health check left in the pool, say) must be reported as dying *during the call*.

Before the fix, the client took the silent close for a stale pooled connection, retried on a
fresh one, could not connect (the runtime was dead) and reported "cannot connect", which is
not during a call. The sidecar then never counted that death against the envelope, so an
envelope that kills its runtime, taken first after every restart, was redelivered again and
again instead of being failed as RuntimeCrashed (found by `python -m faults --scenario poison`).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from asya_sidecar.runtime_client import RuntimeClient, RuntimeUnavailable
from tests.support.runtime import RuntimeFactory, envelope
from tests.support.waiting import wait_until


async def test_death_during_a_call_on_the_health_checks_connection(
    start_runtime: RuntimeFactory, socket_dir: Path
) -> None:
    runtime = start_runtime("timing.gated")
    client = RuntimeClient(str(runtime.socket_path))
    assert await client.healthy()  # leaves its keep-alive connection in the pool
    started = socket_dir / "started"
    payload = {"started": str(started), "release": str(socket_dir / "never")}

    call = asyncio.create_task(client.invoke(json.dumps(envelope(payload)).encode(), timeout=30))
    await asyncio.to_thread(wait_until, started.exists, timeout=20, what="the handler to start")
    runtime.proc.send_signal(signal.SIGKILL)
    # Blocking on purpose: the client's task cannot run until the process is gone, so it
    # finds the listening socket closed too, as a sidecar does when the kernel is quicker.
    runtime.proc.wait(timeout=20)

    with pytest.raises(RuntimeUnavailable) as caught:
        await call
    assert caught.value.during_call, str(caught.value)
    await client.close()
