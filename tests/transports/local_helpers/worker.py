"""A separate OS process that uses the local transport, as a sidecar would.

Run from the repository root:

    python -m tests.transports.local_helpers.worker consume STATE_DIR QUEUE OUT
        Receive and ack until SIGTERM. Each acked body is appended to OUT as one line;
        OUT.ready appears once the receiver is open.
    python -m tests.transports.local_helpers.worker hold STATE_DIR QUEUE OUT
        Receive one message, never settle it, write {"body", "delivery_count", "at"} as JSON
        to OUT (at = wall-clock time of receipt), then wait to be killed.

The lease comes from ASYA_LOCAL_LEASE_SECONDS, as in a sidecar.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from asya_transports.local import LocalTransport

POLL_S = 0.1  # how often `consume` looks at its stop flag while the queue is empty


async def consume(state_dir: str, queue: str, out: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    environ = {**os.environ, "ASYA_STATE_DIR": state_dir}
    async with LocalTransport.from_env(environ) as transport:
        receiver = transport.receive(queue, prefetch=8)
        with out.open("a") as sink:
            out.with_name(out.name + ".ready").touch()
            while not stop.is_set():
                try:
                    # Cancelled often on purpose: a cancelled wait must lose nothing.
                    delivery = await asyncio.wait_for(receiver.__anext__(), POLL_S)
                except TimeoutError:
                    continue
                await delivery.ack()
                sink.write(delivery.body.decode() + "\n")
                sink.flush()
        await receiver.aclose()


async def hold(state_dir: str, queue: str, out: Path) -> None:
    environ = {**os.environ, "ASYA_STATE_DIR": state_dir}
    async with LocalTransport.from_env(environ) as transport:
        delivery = await anext(transport.receive(queue, prefetch=1))
        report = {
            "body": delivery.body.decode(),
            "delivery_count": delivery.delivery_count,
            "at": time.time(),
        }
        partial = out.with_name(out.name + ".partial")
        partial.write_text(json.dumps(report))
        partial.rename(out)  # the test never reads half a report
        await asyncio.Event().wait()  # until SIGKILL


def main(argv: list[str]) -> None:
    mode, state_dir, queue, out = argv
    work = {"consume": consume, "hold": hold}[mode]
    asyncio.run(work(state_dir, queue, Path(out)))


if __name__ == "__main__":
    main(sys.argv[1:])
