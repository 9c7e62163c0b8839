"""What the gateway costs and carries: `python -m bench.gateway`.

    python -m bench.gateway [--only submit,e2e,reporting,pipeline] [--transport local]
                            [--stores sqlite,postgresql] [--rate 200] [--seconds 10]
                            [--clients 16] [--e2e-tasks 200] [--tasks 10000]
                            [--submitters 32] [--deadline 1200] [--no-save]

Every gateway here is the one `asya dev` runs (`asya gateway` in its own process, started by
asya_cli.local_pipeline), so the bench's HTTP client never shares the gateway's event loop.
Its store is SQLite in a temporary state directory, or a fresh PostgreSQL database
`asya_bench_<random>` on 127.0.0.1:5432 (created with asyncpg, dropped at the end). Tasks
are followed and listed through the CLI's own client (asya_cli.gateway_client). The load
comes from aiohttp, with one kept-alive connection per submit in flight: it costs the client
about a fifth of httpx's CPU per request (0.3 against 1.5 ms here), and with httpx the load
generator itself ran out of CPU on 2 cores before the gateway did.

- submit (per store; only the gateway runs, the envelopes pile up on actor a's queue): an
  open loop POSTs `/v1/tasks` at --rate for --seconds, each latency counted from the moment
  the submit was due, so a gateway that falls behind shows as latency (past
  OPEN_LOOP_IN_FLIGHT submits in flight, the next ones wait for a connection, and that wait
  counts too); then --clients closed-loop clients submit as fast as they can for --seconds
  (`max_submits_per_s`). Also the gateway's CPU per submit in the open loop, from /proc.
- e2e (per store): a 1-hop echo actor a with the crew, reporting to the gateway. Alternating,
  --e2e-tasks times each, one at a time: submit through the gateway and follow the task's
  event stream to its terminal status (what `asya submit --wait` does), or publish the
  envelope to a's queue and wait for x-sink's record of it (what `asya send --wait` does;
  it polls the result store every 0.1 s, the bench every 5 ms, so the figure is the
  pipeline's and not the poll's).
- reporting: bench.reporting_cost.measure_cost, the sidecar's CPU per message with
  reporting off and on (--reporting-messages, --reporting-rounds).
- pipeline: a 3-hop echo pipeline a -> b -> c with the crew and a gateway (PostgreSQL when it
  is among --stores, else SQLite): --tasks tasks submitted by --submitters concurrent
  clients, then the bench waits (at most --deadline seconds) until no task is pending,
  running or paused, and counts the tasks of every status by listing them.

Targets (the issue's): reporting adds at most 10% to the sidecar's CPU per message;
PostgreSQL submit p99 under 20 ms at 200 submits/s; every task of the pipeline run ends
succeeded, none stuck. `targets` in the summary says which were met by this run.

Progress goes to stderr; the last line on stdout is the summary, also written to
bench/results/gateway.json (parts not run are absent from it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import io
import json
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from asya_cli import dev_plan, send
from asya_cli.gateway_client import TERMINAL, Client, Target
from asya_cli.local_pipeline import LocalPipeline
from asya_cli.manifests import ActorManifest
from asya_shared import env, records
from asya_shared import stores as result_stores
from asya_sidecar.envelope import encode
from asya_transports import Broker
from bench import measure
from bench.__main__ import source_revision
from bench.brokers import TRANSPORTS, broker
from bench.reporting_cost import measure_cost
from bench.suite import log
from tests.support.waiting import eventually

PARTS = ("submit", "e2e", "reporting", "pipeline")
STORES = ("sqlite", "postgresql")
HERE = Path(__file__).parent
RESULTS = HERE / "results"
POSTGRES_HOST = "127.0.0.1:5432"
POSTGRES_ADMIN_URL = f"postgresql://postgres@{POSTGRES_HOST}/postgres"
PAYLOAD = {"data": "x" * 900}  # about 1 KB, as in the other benches
GATEWAY = "gateway/gateway"  # the supervisor's name of the gateway process
READY_TIMEOUT_S = 60.0
# A client with hundreds of requests queued in its connection pool spends its time on the
# queue, not on the requests: past this many, due submits wait for a connection instead.
OPEN_LOOP_IN_FLIGHT = 64
SUBMIT_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)
WARMUP_SUBMITS = 50  # the first requests open connections and warm the store's caches
E2E_WARMUP = 10
E2E_TIMEOUT_S = 60.0
RESULT_POLL_S = 0.005
PIPELINE_CONCURRENCY = 16  # per actor, as bench.pipeline_throughput runs it
LIST_PAGE = 500  # the gateway's largest page
UNFINISHED = ("pending", "running", "paused")
STATUSES = (*UNFINISHED, "succeeded", "failed", "canceled")
PROGRESS_EVERY_S = 5.0
# The targets.
MAX_REPORTING_OVERHEAD_PCT = 10.0
MAX_POSTGRES_P99_MS = 20.0
TARGET_RATE = 200.0


@dataclasses.dataclass(frozen=True)
class Settings:
    only: Sequence[str]
    transport: str
    stores: Sequence[str]
    rate: float
    seconds: float
    clients: int
    e2e_tasks: int
    tasks: int
    submitters: int
    deadline: float
    reporting_messages: int
    reporting_rounds: int
    save: bool


# ---------------------------------------------------------------------------- pipelines


@contextlib.asynccontextmanager
async def database(store: str) -> AsyncIterator[str | None]:
    """A fresh PostgreSQL database's URL for "postgresql", dropped afterwards; None (the
    SQLite file `asya dev` uses) for "sqlite"."""
    if store == "sqlite":
        yield None
        return
    name = f"asya_bench_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{POSTGRES_HOST}/{name}"
    finally:
        # FORCE: a gateway that did not stop cleanly must not keep the database alive.
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=30)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def echo_actors(*names: str) -> list[ActorManifest]:
    return [
        ActorManifest(
            name=name, handler="handlers.echo", source="bench", concurrency=PIPELINE_CONCURRENCY
        )
        for name in names
    ]


@contextlib.asynccontextmanager
async def gateway_pipeline(
    actors: Sequence[ActorManifest], *, transport: str, store: str, gateway_only: bool = False
) -> AsyncIterator[LocalPipeline]:
    """The actors, the crew and a gateway they report to, as `asya dev` runs them; with
    `gateway_only` just the gateway (the queues are created all the same)."""
    output = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as state:
        async with database(store) as store_url:
            pipeline = LocalPipeline(
                actors,
                transport=transport,
                state_dir=Path(state),
                namespace=f"bench{uuid.uuid4().hex[:6]}",
                workdir=HERE,
                out=output,
                extra_env={env.LOG_LEVEL: "WARNING"},
                gateway_port=0,
                gateway_store=store_url,
            )
            if gateway_only:
                pipeline.specs = [s for s in pipeline.specs if s.role == "gateway"]
            try:
                await pipeline.start(ready_timeout=READY_TIMEOUT_S)
                yield pipeline
            except BaseException:
                tail = output.getvalue().splitlines()[-40:]
                log("the processes' last output:\n  " + "\n  ".join(tail))
                raise
            finally:
                await pipeline.stop()
                if transport != "local":
                    await pipeline.delete_queues()


def gateway_client(pipeline: LocalPipeline) -> Client:
    assert pipeline.gateway is not None
    return Client(Target(pipeline.gateway.url, "bench"), api_key=None)


def load_client(pipeline: LocalPipeline, connections: int) -> aiohttp.ClientSession:
    """A client that keeps up to `connections` connections open, for as many submitters."""
    assert pipeline.gateway is not None
    return aiohttp.ClientSession(
        pipeline.gateway.url,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=SUBMIT_TIMEOUT,
    )


def gateway_cpu_s(pipeline: LocalPipeline) -> float:
    return measure.sample(pipeline.supervisor.pid(GATEWAY)).cpu_s


# -------------------------------------------------------------------------------- submit


@dataclasses.dataclass
class Sample:
    """The latencies of the submits that were accepted, and why the others were not."""

    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    first_error: str | None = None
    last_done: float = 0.0

    def summary(self) -> dict[str, Any]:
        values = self.latencies_ms
        return {
            "submitted": len(values),
            "p50_ms": _ms(measure.percentile(values, 50)) if values else None,
            "p99_ms": _ms(measure.percentile(values, 99)) if values else None,
            "max_ms": _ms(max(values)) if values else None,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "first_error": self.first_error,
        }


def _ms(value: float) -> float:
    return round(value, 3)


async def timed_submit(
    http: aiohttp.ClientSession, body: dict[str, Any], since: float, into: Sample
) -> None:
    """Submit once; the latency counts from `since` (when the submit was due)."""
    try:
        async with http.post("/v1/tasks", json=body) as response:
            answer = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        into.errors[type(exc).__name__] += 1
        into.first_error = into.first_error or f"{type(exc).__name__}: {exc}"
    else:
        if response.status == 201:
            into.latencies_ms.append((time.perf_counter() - since) * 1000)
        else:
            into.errors[str(response.status)] += 1
            into.first_error = into.first_error or f"{response.status}: {answer}"
    into.last_done = time.perf_counter()


async def open_loop(
    http: aiohttp.ClientSession, body: dict[str, Any], rate: float, seconds: float
) -> tuple[Sample, float]:
    """Submit at `rate` whatever happens to earlier submits (each one a task of its own);
    the sample, and the seconds from the first submit due to the last one answered."""
    offsets = measure.send_offsets(rate, seconds)
    sample = Sample()
    running: set[asyncio.Task[None]] = set()
    connections = asyncio.Semaphore(OPEN_LOOP_IN_FLIGHT)

    async def due(since: float) -> None:
        async with connections:
            await timed_submit(http, body, since, sample)

    start = time.perf_counter()
    index = 0
    while index < len(offsets):
        end = measure.due_until(offsets, index, time.perf_counter() - start)
        for i in range(index, end):
            task = asyncio.create_task(due(start + offsets[i]))
            running.add(task)
            task.add_done_callback(running.discard)
        index = end
        if index < len(offsets):
            # Waking up at the next due time is the schedule itself, not a wait for a result.
            await asyncio.sleep(max(0.0, start + offsets[index] - time.perf_counter()))
    await asyncio.gather(*running)
    return sample, sample.last_done - start


async def closed_loop(
    http: aiohttp.ClientSession, body: dict[str, Any], clients: int, seconds: float
) -> tuple[Sample, float]:
    """`clients` submitters, each sending its next submit when the last one is answered."""
    sample = Sample()
    start = time.perf_counter()
    stop_at = start + seconds

    async def submitter() -> None:
        while time.perf_counter() < stop_at:
            await timed_submit(http, body, time.perf_counter(), sample)

    await asyncio.gather(*(submitter() for _ in range(clients)))
    return sample, time.perf_counter() - start


async def bench_submit(settings: Settings, store: str) -> dict[str, Any]:
    body = {"route": ["a"], "payload": PAYLOAD}
    async with (
        gateway_pipeline(
            echo_actors("a"), transport=settings.transport, store=store, gateway_only=True
        ) as pipeline,
        load_client(pipeline, max(OPEN_LOOP_IN_FLIGHT, settings.clients)) as http,
    ):
        warmup = Sample()
        for _ in range(WARMUP_SUBMITS):
            await timed_submit(http, body, time.perf_counter(), warmup)
        if warmup.errors:
            raise RuntimeError(f"the gateway refused warm-up submits: {warmup.first_error}")
        log(f"submit/{store}: open loop at {settings.rate:g}/s for {settings.seconds:g}s")
        cpu_before = gateway_cpu_s(pipeline)
        opened, took = await open_loop(http, body, settings.rate, settings.seconds)
        cpu = gateway_cpu_s(pipeline) - cpu_before
        log(f"submit/{store}: {settings.clients} closed-loop clients for {settings.seconds:g}s")
        closed, elapsed = await closed_loop(http, body, settings.clients, settings.seconds)
    accepted = len(opened.latencies_ms)
    most = closed.summary()
    result = {
        "store": store,
        "rate": settings.rate,
        "seconds": settings.seconds,
        "submits_per_s": round(accepted / took, 1) if took > 0 else None,
        **opened.summary(),
        "gateway_cpu_ms_per_submit": round(cpu * 1000 / accepted, 3) if accepted else None,
        "clients": settings.clients,
        "max_submits_per_s": round(most["submitted"] / elapsed, 1),
        "max_p50_ms": most["p50_ms"],
        "max_p99_ms": most["p99_ms"],
        "max_errors": most["errors"],
    }
    log(json.dumps(result))
    return result


# ----------------------------------------------------------------------------------- e2e


async def through_gateway(client: Client) -> tuple[float, str]:
    """Submit, then follow the event stream until the terminal status: ms and status."""
    started = time.perf_counter()
    task, _ = await client.submit({"route": ["a"], "payload": PAYLOAD})
    status, finished = str(task["status"]), None
    async with asyncio.timeout(E2E_TIMEOUT_S):
        # The stream ends by itself after the terminal status.
        async for event in client.events(task["id"]):
            data = json.loads(event.data)
            if event.event == "status" and data.get("status") in TERMINAL and finished is None:
                finished, status = time.perf_counter(), str(data["status"])
    if finished is None:
        raise RuntimeError(f"the event stream of task {task['id']} ended before its end")
    return (finished - started) * 1000, status


async def through_send(
    transport: Broker, queue: str, results: result_stores.ResultStore
) -> tuple[float, str]:
    """Publish an envelope as `asya send` does and wait for x-sink's record: ms and phase."""
    fields = send.build_envelope(
        ["a"],
        PAYLOAD,
        envelope_id=str(uuid.uuid4()),
        headers={},
        traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        now=datetime.datetime.now(datetime.UTC),
    )
    key = records.key(fields["id"])
    started = time.perf_counter()
    await transport.send(queue, encode(fields))
    data = await eventually(
        lambda: results.get(key),
        what=f"x-sink's record of {fields['id']}",
        timeout=E2E_TIMEOUT_S,
        interval=RESULT_POLL_S,
    )
    elapsed = (time.perf_counter() - started) * 1000
    assert data is not None  # eventually returns only what is truthy
    return elapsed, str((json.loads(data).get("status") or {}).get("phase"))


def _latencies(name: str, runs: Sequence[tuple[float, str]]) -> dict[str, Any]:
    values = [ms for ms, _ in runs]
    return {
        f"{name}_p50_ms": _ms(measure.percentile(values, 50)),
        f"{name}_p99_ms": _ms(measure.percentile(values, 99)),
        f"{name}_not_succeeded": sum(1 for _, status in runs if status != "succeeded"),
    }


async def bench_e2e(settings: Settings, store: str) -> dict[str, Any]:
    async with gateway_pipeline(
        echo_actors("a"), transport=settings.transport, store=store
    ) as pipeline:
        results = result_stores.open_store(dev_plan.results_url(pipeline.state_dir))
        try:
            async with gateway_client(pipeline) as client, pipeline.open_transport() as broker:
                queue = pipeline.queue("a")
                runs: dict[str, list[tuple[float, str]]] = {"gateway": [], "send": []}
                log(f"e2e/{store}: {settings.e2e_tasks} tasks each way, one at a time")
                for i in range(E2E_WARMUP + settings.e2e_tasks):
                    # Alternating, so that a slow spell of the machine hits both paths alike.
                    via_gateway = await through_gateway(client)
                    via_send = await through_send(broker, queue, results)
                    if i >= E2E_WARMUP:
                        runs["gateway"].append(via_gateway)
                        runs["send"].append(via_send)
        finally:
            await results.close()
    result: dict[str, Any] = {
        "store": store,
        "tasks": settings.e2e_tasks,
        **_latencies("gateway", runs["gateway"]),
        **_latencies("send", runs["send"]),
    }
    result["added_p50_ms"] = _ms(result["gateway_p50_ms"] - result["send_p50_ms"])
    result["added_p99_ms"] = _ms(result["gateway_p99_ms"] - result["send_p99_ms"])
    log(json.dumps(result))
    return result


# ------------------------------------------------------------------------------ pipeline


async def submit_many(
    http: aiohttp.ClientSession, body: dict[str, Any], tasks: int, submitters: int
) -> Sample:
    sample = Sample()
    remaining = iter(range(tasks))

    async def submitter() -> None:
        for _ in remaining:  # shared: each task is taken by one submitter
            await timed_submit(http, body, time.perf_counter(), sample)

    await asyncio.gather(*(submitter() for _ in range(submitters)))
    return sample


async def unfinished(client: Client) -> list[str]:
    """The non-terminal statuses some task still has."""
    found = []
    for status in UNFINISHED:
        page = await client.list_tasks(status=status, limit=1, cursor=None)
        if page["tasks"]:
            found.append(status)
    return found


async def count(client: Client, status: str) -> int:
    total, cursor = 0, None
    while True:
        page = await client.list_tasks(status=status, limit=LIST_PAGE, cursor=cursor)
        total += len(page["tasks"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


async def bench_pipeline(settings: Settings) -> dict[str, Any]:
    store = "postgresql" if "postgresql" in settings.stores else "sqlite"
    body = {"route": ["a", "b", "c"], "payload": PAYLOAD}
    async with (
        gateway_pipeline(
            echo_actors("a", "b", "c"), transport=settings.transport, store=store
        ) as pipeline,
        load_client(pipeline, settings.submitters) as http,
        gateway_client(pipeline) as client,
    ):
        cpu_before = gateway_cpu_s(pipeline)
        log(f"pipeline/{store}: submitting {settings.tasks} tasks")
        started = time.perf_counter()
        submitted = await submit_many(http, body, settings.tasks, settings.submitters)
        submit_s = time.perf_counter() - started
        log(f"pipeline/{store}: submitted in {submit_s:.1f}s; waiting for every task to end")
        last_progress = started

        async def all_ended() -> bool:
            nonlocal last_progress
            left = await unfinished(client)
            now = time.perf_counter()
            if left and now - last_progress > PROGRESS_EVERY_S:
                last_progress = now
                log(f"pipeline/{store}: {now - started:.0f}s, some tasks still {left}")
            return not left

        timed_out = False
        try:
            await eventually(
                all_ended,
                what="every task to end",
                timeout=settings.deadline,
                interval=0.5,
            )
        except AssertionError as exc:
            timed_out = True
            log(f"pipeline/{store}: {exc}")
        wall = time.perf_counter() - started
        cpu = gateway_cpu_s(pipeline) - cpu_before
        counts = {status: await count(client, status) for status in STATUSES}
    stuck = sum(counts[status] for status in UNFINISHED)
    result = {
        "store": store,
        "hops": 3,
        "tasks": settings.tasks,
        "submitters": settings.submitters,
        "submitted": len(submitted.latencies_ms),
        "submit_errors": sum(submitted.errors.values()),
        "first_submit_error": submitted.first_error,
        "submit_s": round(submit_s, 1),
        "submit_p99_ms": submitted.summary()["p99_ms"],
        "counts": counts,
        "stuck": stuck,
        "timed_out": timed_out,
        "wall_s": round(wall, 1),
        "tasks_per_s": round(counts["succeeded"] / wall, 1),
        "gateway_cpu_ms_per_task": round(cpu * 1000 / settings.tasks, 3),
    }
    log(json.dumps(result))
    return result


# ---------------------------------------------------------------------------------- main


def targets(summary: dict[str, Any]) -> dict[str, bool]:
    """Which of the issue's targets this run measured, and whether each was met."""
    met: dict[str, bool] = {}
    reporting = summary.get("reporting")
    if reporting is not None:
        met["reporting_overhead_at_most_10pct"] = (
            reporting["overhead_pct"] <= MAX_REPORTING_OVERHEAD_PCT
        )
    postgres = (summary.get("submit") or {}).get("postgresql")
    if postgres is not None and postgres["rate"] >= TARGET_RATE:
        met["postgresql_submit_p99_under_20ms_at_200_per_s"] = (
            postgres["p99_ms"] is not None
            and postgres["p99_ms"] < MAX_POSTGRES_P99_MS
            and postgres["errors"] == 0
        )
    pipeline = summary.get("pipeline")
    if pipeline is not None:
        met["pipeline_every_task_succeeded"] = (
            pipeline["stuck"] == 0 and pipeline["counts"]["succeeded"] == pipeline["tasks"]
        )
    return met


async def run(settings: Settings) -> dict[str, Any]:
    summary: dict[str, Any] = {"bench": "gateway", "transport": settings.transport}
    if "submit" in settings.only:
        summary["submit"] = {s: await bench_submit(settings, s) for s in settings.stores}
    if "e2e" in settings.only:
        summary["e2e"] = {s: await bench_e2e(settings, s) for s in settings.stores}
    if "reporting" in settings.only:
        log("reporting: sidecar CPU per message, reporting off and on")
        summary["reporting"] = await measure_cost(
            transport=settings.transport,
            messages=settings.reporting_messages,
            concurrency=PIPELINE_CONCURRENCY,
            rounds=settings.reporting_rounds,
        )
        log(json.dumps(summary["reporting"]))
    if "pipeline" in settings.only:
        summary["pipeline"] = await bench_pipeline(settings)
    summary["targets"] = targets(summary)
    summary["machine"] = measure.machine()
    summary["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return summary


def _names(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in chosen if name not in allowed]
        if not chosen or unknown:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give one or more of {','.join(allowed)}, separated by commas"
            )
        return chosen

    return parse


def parse(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", type=_names(PARTS), default=list(PARTS), help="parts to run")
    parser.add_argument("--transport", default="local", choices=TRANSPORTS)
    parser.add_argument("--stores", type=_names(STORES), default=list(STORES))
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="open-loop submits/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="per submit measurement")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop submitters")
    parser.add_argument("--e2e-tasks", type=int, default=200, help="per path")
    parser.add_argument("--tasks", type=int, default=10_000, help="through the 3-hop pipeline")
    parser.add_argument("--submitters", type=int, default=32, help="concurrent, for --tasks")
    parser.add_argument(
        "--deadline", type=float, default=1200.0, help="seconds for every task to end"
    )
    parser.add_argument("--reporting-messages", type=int, default=5000)
    parser.add_argument("--reporting-rounds", type=int, default=3)
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    counts = (args.clients, args.e2e_tasks, args.tasks, args.submitters)
    if min(*counts, args.reporting_messages, args.reporting_rounds) < 1:
        parser.error("counts must be at least 1")
    if args.rate <= 0 or args.seconds <= 0 or args.deadline <= 0:
        parser.error("--rate, --seconds and --deadline must be more than 0")
    # The flags are named as the settings are.
    values = vars(args)
    save = not values.pop("no_save")
    return Settings(**values, save=save)


def main(argv: list[str] | None = None) -> None:
    settings = parse(argv)
    source = source_revision()
    with broker(settings.transport):
        summary = asyncio.run(run(settings))
    summary["source"] = source
    if settings.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "gateway.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
