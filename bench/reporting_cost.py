"""What status reporting to a gateway costs the sidecar: CPU per message, reporting off vs on.

    python -m bench.reporting_cost [--transport local|rabbitmq|sqs|pubsub] [--messages N]
                                   [--concurrency 16] [--rounds 3]

One actor "a" (echo handler, a runtime and a sidecar, as `asya dev` runs them) between its
queue and x-sink's queue, which the bench drains itself (the crew is not started). Each round
runs the actor twice, without ASYA_GATEWAY_URL and with it pointing at a stand-in for the
gateway's internal port (a real HTTP server in this process that accepts every batch and
cancels nothing: tests/support/report_receiver.py), the order alternating between rounds.
Once the actor is healthy the bench reads the sidecar's CPU time from /proc, sends N
envelopes of about 1 KB, drains them from x-sink's queue and, with reporting on, also waits
until the stand-in holds every report of every envelope (received, processing, routed); then
it reads the CPU time again. The reporter's idle posts during that wait count against it.

Prints one JSON object per run to stderr and the summary as the last line on stdout:
`sidecar_cpu_ms_per_msg_off`, `sidecar_cpu_ms_per_msg_on` (means over rounds) and
`overhead_pct`. `measure_cost` returns the same summary for other benches.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from asya_cli.local_pipeline import LocalPipeline
from asya_cli.manifests import ActorManifest
from asya_shared import env, names
from asya_transports import Broker
from bench import measure
from bench.brokers import TRANSPORTS, broker
from tests.support.report_receiver import ReportReceiver

__all__ = ["measure_cost", "run_once"]

HERE = Path(__file__).parent
PAYLOAD = {"data": "x" * 900}
SEND_BATCH = 500
REPORTS_PER_MESSAGE = 3  # received, processing, routed
WAIT_TIMEOUT_S = 600.0


def envelope(message_id: str) -> bytes:
    return json.dumps({
        "id": message_id,
        "route": {"prev": [], "curr": "a", "next": []},
        "headers": {},
        "payload": PAYLOAD,
    }).encode()  # fmt: skip


async def run_once(
    *,
    transport: str,
    messages: int,
    concurrency: int,
    gateway_url: str | None,
    settled: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """One run of actor a over `messages` envelopes: the sidecar's CPU seconds from the
    first send to the last output (and then until `settled` returns, if given)."""
    extra_env = {env.LOG_LEVEL: "WARNING"}
    if gateway_url is not None:
        extra_env[env.GATEWAY_URL] = gateway_url
    actor = ActorManifest(
        name="a", handler="handlers.echo", source="bench", concurrency=concurrency
    )
    prefix = f"r{uuid.uuid4().hex[:6]}-"
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as state:
        pipeline = LocalPipeline(
            [actor],
            transport=transport,
            state_dir=Path(state),
            namespace=f"bench{uuid.uuid4().hex[:6]}",
            workdir=HERE,
            out=io.StringIO(),
            extra_env=extra_env,
        )
        # The bench drains x-sink's queue itself.
        pipeline.specs = [s for s in pipeline.specs if s.actor not in names.CREW]
        async with pipeline.open_transport() as client:
            for name in pipeline.actor_names:
                await client.ensure_queue(pipeline.queue(name))
            try:
                await pipeline.start(ready_timeout=60)
                pid = pipeline.supervisor.pid("a/sidecar")
                before = measure.sample(pid).cpu_s
                started = time.perf_counter()
                await send_all(client, pipeline.queue("a"), prefix, messages)
                received = await drain(client, pipeline.queue(names.SINK), prefix, messages)
                drained = time.perf_counter()
                if settled is not None:
                    await settled()
                after = measure.sample(pid).cpu_s
            finally:
                await pipeline.stop()
                if transport != "local":
                    await pipeline.delete_queues()
    return {
        "reporting": gateway_url is not None,
        "messages": messages,
        "received": received,
        "drain_s": round(drained - started, 3),
        "sidecar_cpu_s": round(after - before, 4),
        "sidecar_cpu_ms_per_msg": round((after - before) * 1000 / messages, 4),
    }


async def send_all(client: Broker, queue: str, prefix: str, messages: int) -> None:
    for start in range(0, messages, SEND_BATCH):
        batch = range(start, min(start + SEND_BATCH, messages))
        await asyncio.gather(*(client.send(queue, envelope(f"{prefix}{i}")) for i in batch))


async def drain(client: Broker, queue: str, prefix: str, expected: int) -> int:
    receiver = client.receive(queue, prefetch=500)
    seen: set[str] = set()
    try:
        while len(seen) < expected:
            delivery = await asyncio.wait_for(receiver.__anext__(), WAIT_TIMEOUT_S)
            message_id = json.loads(delivery.body)["id"]
            if message_id.startswith(prefix):
                seen.add(message_id)
            await delivery.ack()
    finally:
        await receiver.aclose()
    return len(seen)


def every_report(receiver: ReportReceiver, messages: int) -> Callable[[], Awaitable[None]]:
    """Waits until the stand-in holds `messages` envelopes' worth of reports more than now."""
    expected = len(receiver.reports) + REPORTS_PER_MESSAGE * messages

    async def arrived() -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while (have := len(receiver.reports)) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {have} of {expected} reports arrived")
            await asyncio.sleep(0.05)  # polling a counter in this process: nothing to await

    return arrived


async def measure_cost(
    *, transport: str, messages: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    with ReportReceiver() as receiver:
        for round_number in range(rounds):
            order = (False, True) if round_number % 2 == 0 else (True, False)
            for reporting in order:
                result = await run_once(
                    transport=transport,
                    messages=messages,
                    concurrency=concurrency,
                    gateway_url=receiver.url if reporting else None,
                    settled=every_report(receiver, messages) if reporting else None,
                )
                print(json.dumps(result), file=sys.stderr, flush=True)
                runs[reporting].append(result)
    off = measure.mean([r["sidecar_cpu_ms_per_msg"] for r in runs[False]])
    on = measure.mean([r["sidecar_cpu_ms_per_msg"] for r in runs[True]])
    assert off is not None
    assert on is not None
    return {
        "bench": "reporting_cost",
        "transport": transport,
        "messages": messages,
        "concurrency": concurrency,
        "rounds": rounds,
        "sidecar_cpu_ms_per_msg_off": round(off, 4),
        "sidecar_cpu_ms_per_msg_on": round(on, 4),
        "overhead_pct": round((on - off) / off * 100, 1),
        "lost": sum(messages - r["received"] for rs in runs.values() for r in rs),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport", default="local", choices=TRANSPORTS)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.messages < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--messages, --concurrency and --rounds must be at least 1")
    with broker(args.transport):
        summary = asyncio.run(
            measure_cost(
                transport=args.transport,
                messages=args.messages,
                concurrency=args.concurrency,
                rounds=args.rounds,
            )
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
