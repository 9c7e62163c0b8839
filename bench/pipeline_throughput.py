"""Backlog drain of a 3-hop echo pipeline (a -> b -> c -> x-sink queue), real processes.

    python -m bench.pipeline_throughput [--transport rabbitmq|local|sqs|pubsub]
                                        [--concurrency 1 16] [--messages N]

Each actor runs as `asya dev` would run it (a runtime and a sidecar process). N envelopes of
about 1 KB are put on a's queue before the actors start; the bench itself consumes x-sink's
queue (so the result store is not what is measured) and reports the rate between the first
and the last arrival. Prints one JSON object per concurrency, then a summary as the last line.
SQS runs on moto in server mode and Pub/Sub on Google's emulator, both started for the run:
their numbers measure those stand-ins on this machine, not AWS or Google.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from asya_cli.local_pipeline import LocalPipeline
from asya_cli.manifests import ActorManifest
from asya_shared import names
from bench.brokers import TRANSPORTS, broker

HERE = Path(__file__).parent
PAYLOAD = {"data": "x" * 900}


def envelope(i: int) -> bytes:
    return json.dumps({
        "id": f"m{i}",
        "route": {"prev": [], "curr": "a", "next": ["b", "c"]},
        "headers": {},
        "payload": PAYLOAD,
    }).encode()  # fmt: skip


async def run_once(*, transport: str, concurrency: int, messages: int) -> dict[str, Any]:
    actors = [
        ActorManifest(name=n, handler="handlers.echo", source="bench", concurrency=concurrency)
        for n in ("a", "b", "c")
    ]
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as state:
        log = io.StringIO()
        pipeline = LocalPipeline(
            actors,
            transport=transport,
            state_dir=Path(state),
            namespace=f"bench{uuid.uuid4().hex[:6]}",
            workdir=HERE,
            out=log,
            extra_env={"ASYA_LOG_LEVEL": "WARNING"},
        )
        # The bench drains x-sink's queue itself; x-sump stays so bad output would show.
        pipeline.specs = [s for s in pipeline.specs if s.actor != names.SINK]
        async with pipeline.open_transport() as transport_client:
            for actor in pipeline.actor_names:
                await transport_client.ensure_queue(pipeline.queue(actor))
            queue_a = pipeline.queue("a")
            for start in range(0, messages, 500):
                batch = range(start, min(start + 500, messages))
                await asyncio.gather(*(transport_client.send(queue_a, envelope(i)) for i in batch))
            try:
                await pipeline.start(ready_timeout=60)
                seen, first, last = await drain(
                    transport_client, pipeline.queue(names.SINK), messages
                )
            finally:
                await pipeline.stop()
                if transport != "local":
                    await pipeline.delete_queues()
    return {
        "transport": transport,
        "hops": 3,
        "concurrency": concurrency,
        "messages": messages,
        "received_at_sink": seen,
        "msgs_per_s": round((seen - 1) / (last - first)) if last > first else None,
        "drain_s": round(last - first, 3),
    }


async def drain(transport: Any, queue: str, expected: int) -> tuple[int, float, float]:
    receiver = transport.receive(queue, prefetch=500)
    seen: set[bytes] = set()
    first = last = 0.0
    deadline = time.monotonic() + 600
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            delivery = await asyncio.wait_for(receiver.__anext__(), 120)
            now = time.perf_counter()
            first = first or now
            last = now
            seen.add(json.loads(delivery.body)["id"].encode())
            await delivery.ack()
    finally:
        await receiver.aclose()
    return len(seen), first, last


def default_messages(transport: str, concurrency: int) -> int:
    if transport == "sqs":
        # moto scans a queue's messages on every request (3.7 ms per send with 50 queued,
        # 17 ms with 1,500 on this machine), so a big backlog measures moto, not the pipeline.
        return 300
    if transport == "pubsub":
        return 2500
    return 2000 if concurrency == 1 else 10000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport", default="rabbitmq", choices=TRANSPORTS)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--messages",
        type=int,
        default=0,
        help="default: 2,000 at concurrency 1 and 10,000 above; 2,500 on the Pub/Sub "
        "emulator; 300 on moto, whose SQS requests get slower as its queues grow",
    )
    args = parser.parse_args()
    results = []
    with broker(args.transport):
        for concurrency in args.concurrency:
            messages = args.messages or default_messages(args.transport, concurrency)
            result = asyncio.run(
                run_once(transport=args.transport, concurrency=concurrency, messages=messages)
            )
            print(json.dumps(result), flush=True)
            results.append(result)
    print(json.dumps({
        "bench": "pipeline_throughput",
        "transport": args.transport,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
