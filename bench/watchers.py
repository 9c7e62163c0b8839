"""Do many event streams slow the pipeline? `python -m bench.watchers`.

    python -m bench.watchers [--watchers 200] [--tasks 200] [--tick-s 0.02] [--no-save]

One `asya dev`-style pipeline (embedded transport, SQLite store): a 1-hop echo actor `a` and
an actor `ticker` whose handler yields a side event every --tick-s seconds. Tasks through `a`
are submitted one at a time and followed to their end as `asya submit --wait` does (submit,
then the task's event stream), --tasks times:

- baseline: nothing else runs;
- watched: a ticker task runs meanwhile and --watchers SSE clients follow it, each reading
  every event it sends (--watchers x 1/--tick-s events a second leave the gateway). The
  watchers read in a process of their own (`--follow`), so the bench's client is not
  delayed by their reading.

The figure is how much the 1-hop tasks' latency grows with the watchers. Everything shares
the machine: the watchers' own reading costs CPU too, which a real deployment would spend
elsewhere, so the growth is an upper bound. Progress goes to stderr; the last line on
stdout is the summary, also written to bench/results/watchers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from asya_cli.gateway_client import Client
from asya_cli.manifests import ActorManifest
from bench import measure
from bench.__main__ import source_revision
from bench.gateway import HERE, RESULTS, echo_actors, gateway_client, gateway_pipeline
from bench.gateway import through_gateway as one_task
from bench.suite import log

WARMUP = 10
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)


@dataclasses.dataclass(frozen=True)
class Settings:
    watchers: int
    tasks: int
    tick_s: float
    save: bool


async def latencies(client: Client, tasks: int) -> list[float]:
    runs = []
    for i in range(WARMUP + tasks):
        ms, status = await one_task(client)
        if status != "succeeded":
            raise RuntimeError(f"a 1-hop task ended {status}")
        if i >= WARMUP:
            runs.append(ms)
    return runs


@contextlib.asynccontextmanager
async def watched(
    url: str, client: Client, watchers: int, tick_s: float
) -> AsyncIterator[Callable[[], int]]:
    """A ticker task followed by `watchers` streams read in a process of their own (so that
    their reading does not delay the bench's own client); yields the events they read."""
    task, _ = await client.submit(
        {"route": ["ticker"], "payload": {"ticks": 10_000_000, "every_s": tick_s}}
    )
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.watchers", "--follow", url, task["id"], str(watchers),
        stdout=asyncio.subprocess.PIPE, cwd=HERE.parent,
    )  # fmt: skip
    assert follower.stdout is not None
    counted = [0]
    all_open = asyncio.Event()

    async def read_counts() -> None:
        assert follower.stdout is not None
        async for line in follower.stdout:
            opened, counted[0] = (int(n) for n in line.split())
            if opened == watchers:
                all_open.set()

    reading = asyncio.create_task(read_counts())
    try:
        async with asyncio.timeout(60):
            await all_open.wait()
        yield lambda: counted[0]
    finally:
        await client.cancel(task["id"])
        follower.terminate()
        await follower.wait()
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


async def follow(url: str, task_id: str, watchers: int) -> None:
    """`--follow`: open `watchers` streams of the task, read every event, and print the
    streams open and the events read so far, about every 0.1 s."""
    counts, opened = [0], [0]
    connector = aiohttp.TCPConnector(limit=watchers + 10)

    async def one(http: aiohttp.ClientSession) -> None:
        async with http.get(f"/v1/tasks/{task_id}/events", timeout=STREAM_TIMEOUT) as reply:
            reply.raise_for_status()
            opened[0] += 1
            async for line in reply.content:
                if line.startswith(b"event:"):
                    counts[0] += 1

    async with aiohttp.ClientSession(url, connector=connector) as http:
        streams = [asyncio.create_task(one(http)) for _ in range(watchers)]
        while True:
            print(opened[0], counts[0], flush=True)
            await asyncio.sleep(0.1)
            if all(stream.done() for stream in streams):
                break


def _summary(runs: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(measure.percentile(runs, 50), 2),
        "p99_ms": round(measure.percentile(runs, 99), 2),
    }


async def run(settings: Settings) -> dict[str, Any]:
    actors = [
        *echo_actors("a"),
        ActorManifest(name="ticker", handler="handlers.ticker", source="bench", concurrency=1),
    ]
    async with gateway_pipeline(actors, transport="local", store="sqlite") as pipeline:
        assert pipeline.gateway is not None
        url = pipeline.gateway.url
        async with gateway_client(pipeline) as client:
            log(f"baseline: {settings.tasks} 1-hop tasks, one at a time")
            baseline = await latencies(client, settings.tasks)
            log(f"watched: the same with {settings.watchers} streams of a ticking task")
            async with watched(url, client, settings.watchers, settings.tick_s) as read:
                before = read()
                started = asyncio.get_running_loop().time()
                with_watchers = await latencies(client, settings.tasks)
                elapsed = asyncio.get_running_loop().time() - started
                delivered = read() - before
    base, loaded = _summary(baseline), _summary(with_watchers)
    return {
        "bench": "watchers",
        "watchers": settings.watchers,
        "tasks": settings.tasks,
        "tick_s": settings.tick_s,
        "baseline": base,
        "with_watchers": loaded,
        "added_p50_ms": round(loaded["p50_ms"] - base["p50_ms"], 2),
        "added_p99_ms": round(loaded["p99_ms"] - base["p99_ms"], 2),
        "events_delivered_per_s": round(delivered / elapsed, 1) if elapsed else None,
        "machine": measure.machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def parse(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.watchers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=200, help="1-hop tasks per round")
    parser.add_argument("--tick-s", type=float, default=0.02, help="between side events")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if args.watchers < 1 or args.tasks < 1 or args.tick_s <= 0:
        parser.error("--watchers and --tasks must be at least 1, --tick-s more than 0")
    return Settings(args.watchers, args.tasks, args.tick_s, save=not args.no_save)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--follow"]:
        url, task_id, watchers = args[1:4]
        asyncio.run(follow(url, task_id, int(watchers)))
        return
    settings = parse(argv)
    summary = asyncio.run(run(settings))
    summary["source"] = source_revision()
    if settings.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "watchers.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
