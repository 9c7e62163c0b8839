"""How long does x-join take to gather a fan-out? `python -m bench.join`.

    python -m bench.join [--transport local|rabbitmq] [--parts 100,1000,10000] [--no-save]

One `asya dev`-style pipeline: `split` returns N parts, `double` works on each (concurrency
8), x-join gathers them (its store: SQLite in the state dir, as under `asya dev`), and x-sink
gets the joined envelope, which this bench reads from x-sink's queue itself. For each N, one
envelope is sent and timed from the send to the joined envelope's arrival, so the figure
holds the whole fan-out, the parts' work and the join; the same route without the join
(N separate results read off x-sink's queue) is timed too, and the difference is what the
join costs. Progress goes to stderr; the last line on stdout is the summary, also written to
bench/results/join.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from asya_cli.local_pipeline import LocalPipeline
from asya_cli.manifests import ActorManifest
from asya_shared import names
from bench.__main__ import source_revision

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "join.json"
DEADLINE_S = 900.0


def actors() -> list[ActorManifest]:
    return [
        ActorManifest(name="split", handler="handlers.split", source="bench"),
        ActorManifest(name="double", handler="handlers.double", source="bench", concurrency=8),
    ]


async def run_once(*, transport: str, parts: int, joined: bool) -> dict[str, Any]:
    route = ["split", "double", names.JOIN] if joined else ["split", "double"]
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as state:
        pipeline = LocalPipeline(
            actors(),
            transport=transport,
            state_dir=Path(state),
            namespace=f"bench{uuid.uuid4().hex[:6]}",
            workdir=HERE,
            out=io.StringIO(),
            extra_env={"ASYA_LOG_LEVEL": "WARNING"},
        )
        # The bench reads x-sink's queue itself.
        pipeline.specs = [s for s in pipeline.specs if s.actor != names.SINK]
        try:
            await pipeline.start(ready_timeout=60)
            async with pipeline.open_transport() as client:
                body = json.dumps({
                    "id": str(uuid.uuid4()),
                    "route": {"prev": [], "curr": route[0], "next": route[1:]},
                    "headers": {},
                    "payload": {"n": parts},
                }).encode()  # fmt: skip
                started = time.perf_counter()
                await client.send(pipeline.queue("split"), body)
                expected = 1 if joined else parts
                received = await drain(client, pipeline.queue(names.SINK), expected)
                seconds = time.perf_counter() - started
        finally:
            await pipeline.stop()
            if transport != "local":
                await pipeline.delete_queues()
    return {
        "parts": parts,
        "joined": joined,
        "results_at_sink": received,
        "seconds": round(seconds, 3),
        "parts_per_s": round(parts / seconds, 1),
    }


async def drain(transport: Any, queue: str, expected: int) -> int:
    receiver = transport.receive(queue, prefetch=500)
    seen = 0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while seen < expected and time.monotonic() < deadline:
            delivery = await asyncio.wait_for(receiver.__anext__(), DEADLINE_S)
            seen += 1
            await delivery.ack()
    finally:
        await receiver.aclose()
    return seen


async def run(transport: str, sizes: list[int]) -> dict[str, Any]:
    rows = []
    for parts in sizes:
        for joined in (False, True):
            row = await run_once(transport=transport, parts=parts, joined=joined)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return {"bench": "join", "transport": transport, "source": source_revision(), "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport", default="local", choices=["local", "rabbitmq"])
    parser.add_argument("--parts", default="100,1000,10000")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    sizes = [int(size) for size in args.parts.split(",")]
    summary = asyncio.run(run(args.transport, sizes))
    line = json.dumps(summary)
    if not args.no_save:
        RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(line)


if __name__ == "__main__":
    main()
