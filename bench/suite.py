"""The scenarios of `python -m bench`, run side by side on one broker (see bench/__main__.py).

Queues. A one-hop run uses q1 = a's queue and q2 = b's queue: the floor forwards q1 -> q2,
and so does actor "a" (envelopes with route curr "a", next ["b"]; nobody but the bench
consumes q2). A three-hop run is the pipeline a -> b -> c, whose output the bench takes from
x-sink's queue. The crew processes are not started (their queues exist): the bench is the
only consumer of the output, and an envelope that went to x-sump would count as lost. Every
scenario run gets a fresh namespace of queues, declared the same way (see fresh_queues).

Every message has an id unique in the run; the ledger counts every id sent and received, so
`lost` covers every scenario, warm-up and latency probes included.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_cli.local_pipeline import LocalPipeline
from asya_cli.manifests import ActorManifest
from asya_shared import env, names
from asya_transports import Broker, TransportError
from bench import measure
from bench.floor import READY, InFlight

HERE = Path(__file__).parent
ROOT = HERE.parent
PAYLOAD_DATA = "x" * 900  # with the envelope around it, about 1 KB on the wire
SCENARIOS = ("floor", "ours_1hop", "ours_3hop", "sequential")
ROUND_MIN_S = 5.0  # a drain shorter than this is run again with a bigger backlog (once)
ROUND_TARGET_S = 8.0
# Bounds on the backlog of one drain. moto scans a queue's messages on every request (see
# bench/pipeline_throughput.py), so a big SQS backlog measures moto rather than the pipeline.
MESSAGE_BOUNDS = {"sqs": (100, 1500), "pubsub": (300, 30000)}
DEFAULT_BOUNDS = (500, 200000)
DEFAULT_WARMUP = {"sqs": 60, "pubsub": 300}
IDLE_TIMEOUT_S = {"sqs": 120.0, "pubsub": 120.0}  # no arrival for this long ends a phase
LATENCY_PROBES = 20
SEND_BATCH = 500
RECEIVE_PREFETCH = 500


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Settings:
    transport: str
    concurrency: int = 16
    messages: int = 0  # 0: sized per scenario from the warm-up
    rounds: int = 2
    warmup: int = 0  # 0: the transport's default
    latency_seconds: float = 10.0
    latency_share: float = 0.5  # of the floor's throughput
    only: Sequence[str] = SCENARIOS
    save: bool = True  # write bench/results/<transport>.json


def envelope(message_id: str, *, nxt: Sequence[str], sent_at: float | None) -> bytes:
    return json.dumps({
        "id": message_id,
        "route": {"prev": [], "curr": "a", "next": list(nxt)},
        "headers": {},
        "payload": {"data": PAYLOAD_DATA, "t": sent_at},
    }).encode()  # fmt: skip


@dataclass
class Ledger:
    """Every id sent and received in the run."""

    sent: set[str] = field(default_factory=set)
    received: set[str] = field(default_factory=set)
    duplicates: int = 0

    def receive(self, message_id: str) -> bool:
        if message_id in self.received:
            self.duplicates += 1
            return False
        self.received.add(message_id)
        return True

    @property
    def lost(self) -> int:
        return len(self.sent - self.received)


class Phase:
    """What arrives for one scenario run: count, first and last arrival, latencies, and the
    CPU of the watched processes at the first and the last arrival."""

    def __init__(self, prefix: str, expected: int, watch: dict[str, int] | None = None) -> None:
        self.prefix = f"{prefix}-"
        self.expected = expected
        self.watch = watch or {}
        self.arrivals = 0
        self.first = self.last = 0.0
        self.latencies_ms: list[float] = []
        self.times: list[float] = []  # of every arrival
        self.cpu_first: dict[str, float] = {}
        self.cpu_last: dict[str, float] = {}
        self.cpu_from = 0  # arrivals when cpu_first was taken
        self.changed = asyncio.Condition()

    def owns(self, message_id: str) -> bool:
        return message_id.startswith(self.prefix)

    async def record(self, now: float, sent_at: float | None) -> None:
        self.arrivals += 1
        if self.arrivals == 1:
            self.first = now
            if not self.cpu_first:
                self.mark_cpu()
        self.last = now
        self.times.append(now)
        if self.arrivals == self.expected:
            self.cpu_last = self._cpu()
        if sent_at is not None:
            self.latencies_ms.append((now - sent_at) * 1000)
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.arrivals >= count)

    def mark_cpu(self) -> None:
        """Open the CPU window: from here to the last arrival."""
        self.cpu_first = self._cpu()
        self.cpu_from = self.arrivals

    def _cpu(self) -> dict[str, float]:
        result = {}
        for name, pid in self.watch.items():
            with contextlib.suppress(OSError):
                result[name] = measure.sample(pid).cpu_s
        return result

    @property
    def rate(self) -> float | None:
        if self.arrivals < 2 or self.last <= self.first:
            return None
        return (self.arrivals - 1) / (self.last - self.first)

    @property
    def steady_rate(self) -> float | None:
        """The rate between the 10th and the 90th percentile arrival: what sizes the next
        backlog. The first arrivals can come in a burst (output that piled up before the
        bench's receiver looked), which would make a short drain look far faster."""
        return measure.steady_rate(self.times)

    def cpu_per_1k(self, name: str) -> float | None:
        counted = self.arrivals - self.cpu_from
        if name not in self.cpu_first or name not in self.cpu_last or counted < 1:
            return None
        return (self.cpu_last[name] - self.cpu_first[name]) * 1000 / counted


async def collect(
    transport: Broker, queue: str, phase: Phase, ledger: Ledger, idle_timeout: float
) -> None:
    """Take what arrives on `queue` until the phase has all it expects, or nothing came for
    `idle_timeout` seconds. Acks run in the background so they do not pace the receiving."""
    receiver = transport.receive(queue, prefetch=RECEIVE_PREFETCH)
    acks = InFlight()
    try:
        while phase.arrivals < phase.expected:
            try:
                delivery = await asyncio.wait_for(receiver.__anext__(), idle_timeout)
            except TimeoutError:
                log(f"  {phase.prefix}: nothing arrived for {idle_timeout:g} s; giving up")
                break
            now = time.perf_counter()
            acks.start(delivery.ack())
            try:
                envelope_ = json.loads(delivery.body)
                message_id = str(envelope_["id"])
                sent_at = envelope_["payload"].get("t")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log(f"  unexpected body on {queue}: {exc!r} {delivery.body[:200]!r}")
                continue
            if ledger.receive(message_id) and phase.owns(message_id):
                await phase.record(now, sent_at)
    finally:
        await receiver.aclose()
        await acks.drain()


async def send_all(
    transport: Broker, queue: str, ledger: Ledger, ids: Sequence[str], nxt: Sequence[str]
) -> None:
    for start in range(0, len(ids), SEND_BATCH):
        batch = ids[start : start + SEND_BATCH]
        ledger.sent.update(batch)
        await asyncio.gather(*(
            transport.send(queue, envelope(i, nxt=nxt, sent_at=None)) for i in batch
        ))  # fmt: skip


async def send_open_loop(
    transport: Broker,
    queue: str,
    ledger: Ledger,
    prefix: str,
    *,
    rate: float,
    seconds: float,
    nxt: Sequence[str],
) -> int:
    """Send at a fixed rate whatever happens to earlier messages. Each body carries the time
    the message was due (not when it went out), so a late sender counts as latency."""
    offsets = measure.send_offsets(rate, seconds)
    sends = InFlight()
    start = time.perf_counter()
    index = 0
    while index < len(offsets):
        end = measure.due_until(offsets, index, time.perf_counter() - start)
        for i in range(index, end):
            message_id = f"{prefix}-{i}"
            ledger.sent.add(message_id)
            body = envelope(message_id, nxt=nxt, sent_at=start + offsets[i])
            sends.start(transport.send(queue, body))
        index = end
        if index < len(offsets):
            await asyncio.sleep(max(0.0, start + offsets[index] - time.perf_counter()))
    await sends.drain()
    return len(offsets)


class RssSampler:
    """The largest RSS of each watched process, sampled every `every` seconds."""

    def __init__(self, pids: dict[str, int], every: float = 0.25) -> None:
        self.pids = pids
        self.every = every
        self.peak: dict[str, float] = {}

    def take(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                rss = measure.sample(pid).rss_mb
                self.peak[name] = max(rss, self.peak.get(name, 0.0))

    def merge(self, other: RssSampler) -> None:
        for name, rss in other.peak.items():
            self.peak[name] = max(rss, self.peak.get(name, 0.0))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                self.take()
                await asyncio.sleep(self.every)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class FloorProcess:
    """`python -m bench.floor` as a child process, stopped with SIGTERM like a sidecar."""

    def __init__(
        self, transport: str, source: str, target: str, prefetch: int, environ: dict[str, str]
    ):
        self.argv = [
            sys.executable, "-m", "bench.floor", "--transport", transport,
            "--source", source, "--target", target, "--prefetch", str(prefetch),
        ]  # fmt: skip
        self.environ = environ
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=ROOT,
            env=self.environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while line := await self.proc.stdout.readline():
                text = line.decode(errors="replace").rstrip()
                self.output.append(text)
                if text == READY:
                    return
        await self.proc.wait()
        raise RuntimeError(f"the floor exited before it was ready: {self.output[-20:]}")

    async def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            rest, _ = await self.proc.communicate()
        self.output.extend(rest.decode(errors="replace").splitlines())
        if self.proc.returncode != 0:
            raise RuntimeError(f"the floor exited with {self.proc.returncode}: {self.output[-20:]}")


@dataclass
class DrainResult:
    scenario: str
    messages: int
    received: int
    msgs_per_s: float | None
    drain_s: float
    steady_msgs_per_s: float | None = None
    cpu_s_per_1k: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "messages": self.messages,
            "received": self.received,
            "msgs_per_s": None if self.msgs_per_s is None else round(self.msgs_per_s, 1),
            "steady_msgs_per_s": _maybe_round(self.steady_msgs_per_s, 1),
            "drain_s": round(self.drain_s, 3),
            "cpu_s_per_1k": {
                k: None if v is None else round(v, 4) for k, v in self.cpu_s_per_1k.items()
            },
        }


class Suite:
    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.run_id = f"bench{uuid.uuid4().hex[:6]}"
        self.phases = 0
        self.restarts = 0  # of any actor process, over the run: should stay 0
        self.ledger = Ledger()
        self.out = io.StringIO()  # the children's output (warnings and errors only)
        self.rss_idle: dict[str, float] = {}
        self.rss_load = RssSampler({})
        self.idle_timeout = IDLE_TIMEOUT_S.get(settings.transport, 60.0)
        self.transport: Broker | None = None

    # -- pipelines and queues

    def pipeline(self, *, hops: int, concurrency: int, namespace: str) -> LocalPipeline:
        actor_names = ("a", "b", "c") if hops == 3 else ("a",)
        actors = [
            ActorManifest(name=n, handler="handlers.echo", source="bench", concurrency=concurrency)
            for n in actor_names
        ]
        pipeline = LocalPipeline(
            actors,
            transport=self.settings.transport,
            state_dir=self.state_dir,
            namespace=namespace,
            workdir=HERE,
            out=self.out,
            extra_env={env.LOG_LEVEL: "WARNING"},
        )
        pipeline.specs = [s for s in pipeline.specs if s.actor not in names.CREW]
        return pipeline

    @contextlib.asynccontextmanager
    async def fresh_queues(self, hops: int) -> AsyncIterator[tuple[str, str, str]]:
        """A namespace of new queues for one scenario run: (namespace, source, target).

        Not one pair for the whole run: a consumer that stops with a long poll (SQS) or a
        pull (Pub/Sub) in flight leaves it open on the server, which hands it the next
        message sent and hides that message for a whole lease (30 s on SQS), so the next
        scenario would measure that. Every pair is declared the same way, by Asya's transport.
        """
        self.phases += 1
        namespace = f"{self.run_id}p{self.phases}"
        actors = ["a", "b", "c"] if hops == 3 else ["a", "b"]
        queues = [self._queue(namespace, actor) for actor in (*actors, *names.CREW)]
        try:
            for queue in queues:
                await self.client.ensure_queue(queue)
            last = names.SINK if hops == 3 else "b"
            yield namespace, self._queue(namespace, "a"), self._queue(namespace, last)
        finally:
            for queue in queues:
                with contextlib.suppress(TransportError):
                    await self.client.delete_queue(queue)

    def _queue(self, namespace: str, actor: str) -> str:
        return names.check_queue_name(names.queue_name(namespace, actor), self.settings.transport)

    @property
    def client(self) -> Broker:
        assert self.transport is not None
        return self.transport

    @staticmethod
    def watched(pipeline: LocalPipeline) -> dict[str, int]:
        """The pids of actor a's sidecar and runtime, from the supervisor."""
        return {role: pipeline.supervisor.pid(f"a/{role}") for role in ("sidecar", "runtime")}

    def count_restarts(self, pipeline: LocalPipeline) -> None:
        with contextlib.suppress(RuntimeError):  # never started
            for spec in pipeline.specs:
                self.restarts += pipeline.supervisor.restarts(spec.name)

    def floor_env(self) -> dict[str, str]:
        return {**os.environ, env.STATE_DIR: str(self.state_dir)}

    @contextlib.asynccontextmanager
    async def forwarding(
        self,
        scenario: str,
        *,
        hops: int,
        concurrency: int,
        namespace: str,
        source: str,
        target: str,
    ) -> AsyncIterator[dict[str, int]]:
        """The forwarder under test (the floor, or Asya's pipeline) running between `source`
        and `target`; yields the pids whose CPU and memory to watch, stops it on exit."""
        floor: FloorProcess | None = None
        pipeline: LocalPipeline | None = None
        try:
            if scenario == "floor":
                floor = FloorProcess(
                    self.settings.transport, source, target, concurrency, self.floor_env()
                )
                await floor.start()
                yield {"floor": floor.pid}
            else:
                pipeline = self.pipeline(hops=hops, concurrency=concurrency, namespace=namespace)
                await pipeline.start(ready_timeout=60)
                yield self.watched(pipeline)
        finally:
            if floor is not None:
                await floor.stop()
            if pipeline is not None:
                self.count_restarts(pipeline)
                await pipeline.stop()

    # -- one drain

    async def drain(self, scenario: str, prefix: str, messages: int) -> DrainResult:
        hops = 3 if scenario == "ours_3hop" else 1
        async with self.fresh_queues(hops) as queues:
            return await self._drain(scenario, prefix, messages, hops, *queues)

    async def _drain(
        self,
        scenario: str,
        prefix: str,
        messages: int,
        hops: int,
        namespace: str,
        source: str,
        target: str,
    ) -> DrainResult:
        nxt = ["b", "c"] if hops == 3 else ["b"]
        ids = [f"{prefix}-{i}" for i in range(messages)]
        await send_all(self.client, source, self.ledger, ids, nxt)
        phase = Phase(prefix, messages)
        # The bench takes the output from before the consumer starts, so that the first and
        # the last arrival bound the drain.
        collector = asyncio.create_task(
            collect(self.client, target, phase, self.ledger, self.idle_timeout)
        )
        concurrency = 1 if scenario == "sequential" else self.settings.concurrency
        try:
            async with self.forwarding(
                scenario, hops=hops, concurrency=concurrency, namespace=namespace,
                source=source, target=target,
            ) as watch:  # fmt: skip
                try:
                    phase.watch = watch
                    # The consumer may have begun already: the CPU window counts from here.
                    phase.mark_cpu()
                    sampler = RssSampler(phase.watch)
                    async with sampler.running():
                        await collector
                    if scenario == "ours_1hop":
                        self.rss_load.merge(sampler)
                finally:
                    await stop_task(collector)  # before the forwarder stops, as ever
        finally:
            await stop_task(collector)  # if the forwarder never started
        cpu = {name: phase.cpu_per_1k(name) for name in phase.watch}
        rate = phase.rate
        result = DrainResult(
            scenario=scenario,
            messages=messages,
            received=phase.arrivals,
            msgs_per_s=rate,
            steady_msgs_per_s=phase.steady_rate,
            drain_s=phase.last - phase.first,
            cpu_s_per_1k=cpu,
        )
        log(f"  {prefix}: {json.dumps(result.as_dict())}")
        return result

    # -- one open-loop latency run

    async def latency(self, scenario: str, prefix: str, rate: float) -> list[float]:
        async with self.fresh_queues(1) as queues:
            return await self._latency(scenario, prefix, rate, *queues)

    async def _latency(
        self, scenario: str, prefix: str, rate: float, namespace: str, source: str, target: str
    ) -> list[float]:
        count = len(measure.send_offsets(rate, self.settings.latency_seconds))
        phase = Phase(prefix, LATENCY_PROBES + count)
        sampler = RssSampler({})
        async with self.forwarding(
            scenario, hops=1, concurrency=self.settings.concurrency, namespace=namespace,
            source=source, target=target,
        ) as watch:  # fmt: skip
            if scenario != "floor":
                sampler.pids = watch
                if not self.rss_idle:  # fresh and healthy, nothing received yet
                    self.rss_idle = {
                        name: measure.sample(pid).rss_mb for name, pid in sampler.pids.items()
                    }
            await self._time_open_loop(prefix, rate, source, target, phase, sampler)
        if scenario != "floor":
            self.rss_load.merge(sampler)
        got = len(phase.latencies_ms)
        samples = sorted(phase.latencies_ms)
        p50 = measure.percentile(samples, 50) if samples else None
        log(f"  {prefix}: rate {rate:.0f}/s, {got}/{count} timed, p50 {p50} ms")
        return phase.latencies_ms

    async def _time_open_loop(
        self,
        prefix: str,
        rate: float,
        source: str,
        target: str,
        phase: Phase,
        sampler: RssSampler,
    ) -> None:
        """Probes one at a time, then the open-loop sends; returns once all arrived."""
        collector = asyncio.create_task(
            collect(self.client, target, phase, self.ledger, self.idle_timeout)
        )
        try:
            async with sampler.running():
                # Probes, one at a time: the consumer is up and the path is warm.
                for i in range(LATENCY_PROBES):
                    message_id = f"{prefix}-probe{i}"
                    self.ledger.sent.add(message_id)
                    await self.client.send(source, envelope(message_id, nxt=["b"], sent_at=None))
                    await wait_or_fail(phase.wait_for(i + 1), collector)
                await send_open_loop(
                    self.client,
                    source,
                    self.ledger,
                    prefix,
                    rate=rate,
                    seconds=self.settings.latency_seconds,
                    nxt=["b"],
                )
                await collector
        finally:
            await stop_task(collector)

    # -- the whole run

    async def run(self) -> dict[str, Any]:
        settings = self.settings
        bounds = MESSAGE_BOUNDS.get(settings.transport, DEFAULT_BOUNDS)
        warmup = settings.warmup or DEFAULT_WARMUP.get(settings.transport, 1000)
        scenarios = [s for s in SCENARIOS if s in settings.only]
        setup = self.pipeline(hops=1, concurrency=1, namespace=self.run_id)
        async with setup.open_transport() as transport:
            self.transport = transport
            return await self._run(scenarios, warmup, bounds)

    async def _run(
        self, scenarios: list[str], warmup: int, bounds: tuple[int, int]
    ) -> dict[str, Any]:
        settings = self.settings
        log(f"warm-up: {warmup} messages per scenario")
        sizes: dict[str, int] = {}
        warm: dict[str, Any] = {}
        for scenario in scenarios:
            result = await self.drain(scenario, f"w-{scenario}", warmup)
            warm[scenario] = result.as_dict()
            sizes[scenario] = settings.messages or measure.messages_for(
                result.steady_msgs_per_s or 0,
                seconds=ROUND_TARGET_S,
                low=bounds[0],
                high=bounds[1],
            )
        results: dict[str, list[DrainResult]] = {s: [] for s in scenarios}
        for round_ in range(1, settings.rounds + 1):
            log(f"round {round_}: " + ", ".join(f"{s} {sizes[s]}" for s in scenarios))
            for scenario in scenarios:
                prefix = f"r{round_}-{scenario}"
                result = await self.drain(scenario, prefix, sizes[scenario])
                short = result.drain_s < ROUND_MIN_S and sizes[scenario] < bounds[1]
                if short and not settings.messages and result.msgs_per_s:
                    sizes[scenario] = max(
                        sizes[scenario] + 1,
                        measure.messages_for(
                            result.msgs_per_s,
                            seconds=ROUND_TARGET_S,
                            low=bounds[0],
                            high=bounds[1],
                        ),
                    )
                    log(f"  shorter than {ROUND_MIN_S:g} s: again with {sizes[scenario]}")
                    result = await self.drain(scenario, f"{prefix}-again", sizes[scenario])
                results[scenario].append(result)

        def rates(scenario: str) -> list[float]:
            return [r.msgs_per_s for r in results.get(scenario, []) if r.msgs_per_s is not None]

        floor_rate = measure.mean(rates("floor"))
        latency_rate = (floor_rate or 0) * settings.latency_share
        floor_ms: list[float] = []
        ours_ms: list[float] = []
        if latency_rate > 0 and "ours_1hop" in scenarios:
            seconds = settings.latency_seconds
            log(f"latency: open loop at {latency_rate:.0f} msgs/s for {seconds:g} s")
            for round_ in range(1, settings.rounds + 1):
                floor_ms += await self.latency("floor", f"l{round_}-floor", latency_rate)
                ours_ms += await self.latency("ours_1hop", f"l{round_}-ours", latency_rate)

        def cpu(name: str) -> float | None:
            values = [r.cpu_s_per_1k.get(name) for r in results.get("ours_1hop", [])]
            return measure.mean([v for v in values if v is not None])

        floor_cpu = [r.cpu_s_per_1k.get("floor") for r in results.get("floor", [])]
        ours_rate = measure.mean(rates("ours_1hop"))
        extra = {
            "latency_rate_msgs_per_s": round(latency_rate, 1),
            "latency_seconds": settings.latency_seconds,
            "ours_overloaded_at_latency_rate": bool(
                ours_rate is not None and ours_rate < latency_rate
            ),
            "floor_cpu_s_per_1k": _maybe_round(
                measure.mean([v for v in floor_cpu if v is not None]), 4
            ),
            "runtime_rss_mb_idle": _maybe_round(self.rss_idle.get("runtime"), 1),
            "runtime_rss_mb_load": _maybe_round(self.rss_load.peak.get("runtime"), 1),
            "messages_per_scenario": sizes,
            "rounds": settings.rounds,
            "sent": len(self.ledger.sent),
            "received": len(self.ledger.received & self.ledger.sent),
            "duplicates": self.ledger.duplicates,
            "process_restarts": self.restarts,
            "actor_log_lines": len(self.out.getvalue().splitlines()),
            "warmup": warm,
            "round_results": {s: [r.as_dict() for r in rs] for s, rs in results.items()},
        }
        return measure.summarize(
            transport=settings.transport,
            messages=sizes.get("ours_1hop", settings.messages),
            concurrency=settings.concurrency,
            floor_rates=rates("floor"),
            ours_rates=rates("ours_1hop"),
            ours_3hop_rates=rates("ours_3hop"),
            sequential_rates=rates("sequential"),
            floor_latencies_ms=floor_ms,
            ours_latencies_ms=ours_ms,
            sidecar_cpu_s_per_1k=cpu("sidecar"),
            runtime_cpu_s_per_1k=cpu("runtime"),
            sidecar_rss_mb_idle=self.rss_idle.get("sidecar"),
            sidecar_rss_mb_load=self.rss_load.peak.get("sidecar"),
            lost=self.ledger.lost,
            extra=extra,
        )


def _maybe_round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


async def stop_task(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def wait_or_fail(waiting: Any, collector: asyncio.Task[None]) -> None:
    """Wait for `waiting`, unless the collector ends first (it gave up: nothing arrived)."""
    task = asyncio.ensure_future(waiting)
    await asyncio.wait({task, collector}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        task.cancel()
        raise RuntimeError("a latency probe did not arrive")


async def run_suite(settings: Settings) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as state:
        suite = Suite(settings, Path(state))
        try:
            return await suite.run()
        finally:
            output = suite.out.getvalue().strip()
            if output:
                log("output of the actors' processes (warnings and errors):\n" + output[-5000:])
