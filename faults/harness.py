"""One scenario's pipeline: a -> b -> c as `asya dev` runs it, a feeder and a verifier.

The pipeline is asya_cli.local_pipeline.LocalPipeline, the object `asya dev` runs, so the
processes, their supervision (a killed process is restarted after a growing delay, as a
kubelet would) and their environment are a user's. The verifier reads what x-sink and x-sump
stored under the state directory, and the call log the last hop's handler writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_cli.local_pipeline import LocalPipeline
from asya_cli.manifests import ActorManifest
from asya_shared import records
from asya_transports import Broker as Transport
from faults.brokers import Broker
from faults.outcome import Call, Outcome, tally

HANDLERS = Path(__file__).parent / "handlers"
READY_TIMEOUT_S = 90.0
FEED_BATCH = 100
# Short leases, so that what a killed consumer held comes back quickly (a running handler's
# lease is extended by the sidecar's heartbeat, so these do not cut real work short).
LEASE_ENV = {
    "ASYA_LOCAL_LEASE_SECONDS": "3",
    "ASYA_SQS_VISIBILITY_TIMEOUT": "5",
    "ASYA_PUBSUB_ACK_DEADLINE": "10",
}
ROUTE = ("a", "b", "c")
SQS_CAP = 300


@dataclass(frozen=True)
class Sizes:
    envelopes: int
    faults: int


@dataclass
class Context:
    """What a scenario gets: the broker, its sizes, a seeded random source, a scratch dir."""

    broker: Broker
    sizes: Sizes
    rng: random.Random
    workdir: Path
    log: Callable[[str], None] = field(default=lambda _line: None)

    @property
    def transport(self) -> str:
        return self.broker.transport

    @property
    def envelopes(self) -> int:
        """The profile's size, at most SQS_CAP on SQS: moto walks the whole queue on every
        call, so a backlog of N costs it O(N^2) (1,000 through one actor took 270 s)."""
        if self.transport == "sqs":
            return min(self.sizes.envelopes, SQS_CAP)
        return self.sizes.envelopes


def step_actors(
    *, middle_concurrency: int = 4, middle_handler: str = "steps.middle", **middle: Any
) -> list[ActorManifest]:
    """The pipeline a -> b -> c; `middle` sets more of b's manifest (env, resiliency, ...).
    Every process finds the call log's directory in FAULTS_CALLS_DIR (set by Run)."""
    return [
        ActorManifest(name="a", handler="steps.first", source="faults", concurrency=8),
        ActorManifest(
            name="b",
            handler=middle_handler,
            source="faults",
            concurrency=middle_concurrency,
            **middle,
        ),
        ActorManifest(name="c", handler="steps.last", source="faults", concurrency=8),
    ]


class Run:
    """A started pipeline plus the bookkeeping of one scenario run."""

    def __init__(
        self,
        ctx: Context,
        actors: Sequence[ActorManifest] | None = None,
        *,
        extra_env: Mapping[str, str] | None = None,
        gateway: bool = False,
        prepare: Callable[[LocalPipeline], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=ctx.workdir))
        self.calls_dir = self.root / "calls"
        self.calls_dir.mkdir()
        self.log_path = self.root / "pipeline.log"
        self._log = self.log_path.open("w")
        self.pipeline = LocalPipeline(
            actors if actors is not None else step_actors(),
            transport=ctx.transport,
            state_dir=self.root / "state",
            namespace=f"f{uuid.uuid4().hex[:8]}",
            workdir=HANDLERS,
            out=self._log,
            extra_env={**LEASE_ENV, "FAULTS_CALLS_DIR": str(self.calls_dir), **(extra_env or {})},
            gateway_port=0 if gateway else None,
        )
        if prepare is not None:
            prepare(self.pipeline)
        self.results_dir = self.pipeline.state_dir / "results"
        self.sump_dir = self.pipeline.state_dir / "sump"
        self.fault_times: list[float] = []
        self.started = time.monotonic()
        self._transport: Transport | None = None

    async def __aenter__(self) -> Run:
        self._transport = self.pipeline.open_transport()
        await self._transport.__aenter__()
        try:
            await self.pipeline.start(READY_TIMEOUT_S)
        except Exception as exc:
            await self.close()
            raise RuntimeError(f"the pipeline did not start: {exc}\n{self.log_tail()}") from exc
        self.started = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.pipeline.stop()
        if self.ctx.transport != "local":
            try:
                await self.pipeline.delete_queues()
            except Exception as exc:  # a broker taken away by the scenario may refuse
                self.ctx.log(f"could not delete the run's queues: {exc}")
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        self._log.close()

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("the run has not started")
        return self._transport

    # --- feeding ---

    def ids(self, count: int, prefix: str = "e") -> list[str]:
        return [f"{prefix}{i:05d}" for i in range(count)]

    def envelope(self, envelope_id: str, route: Sequence[str] = ROUTE, **payload: Any) -> bytes:
        body = {
            "id": envelope_id,
            "route": {"prev": [], "curr": route[0], "next": list(route[1:])},
            "headers": {},
            "status": {"phase": "pending", "actor": route[0], "attempt": 1, "max_attempts": 1},
            "payload": {"id": envelope_id, **payload},
        }
        return json.dumps(body).encode()

    async def feed(self, bodies: Iterable[tuple[str, bytes]]) -> None:
        """Send (actor, body) pairs, FEED_BATCH at a time."""
        pending = list(bodies)
        for start in range(0, len(pending), FEED_BATCH):
            batch = pending[start : start + FEED_BATCH]
            await asyncio.gather(
                *(self.transport.send(self.pipeline.queue(a), body) for a, body in batch)
            )

    async def feed_ids(self, ids: Sequence[str], **payload: Any) -> None:
        await self.feed((ROUTE[0], self.envelope(i, **payload)) for i in ids)

    # --- faults ---

    def fault(self) -> None:
        """Note that a fault is being injected now (duplicates are attributed to faults)."""
        self.fault_times.append(time.time())

    def thresholds(self, total: int, faults: int) -> list[int]:
        """Random progress points (finished envelopes) at which to inject each fault, spread
        over the run's middle, so that every fault hits a pipeline with work in flight."""
        low, high = max(1, total // 20), max(2, total * 17 // 20)
        return sorted(self.ctx.rng.randint(low, high) for _ in range(faults))

    async def at_progress(self, count: int, timeout: float = 600.0) -> None:
        await wait_for(lambda: self.finished() >= count, f"{count} envelopes finished", timeout)

    def health_port(self, actor: str) -> int:
        for spec in self.pipeline.specs:
            if spec.name == f"{actor}/sidecar" and spec.health_port is not None:
                return spec.health_port
        raise KeyError(f"no sidecar with a health port for {actor}")

    async def healthz(self, actor: str) -> int:
        """The status code of the actor's sidecar /healthz; 0 when nothing answers."""
        status, _ = await sidecar_health(self.health_port(actor))
        return status

    # --- verifying ---

    def finished(self) -> int:
        """Envelopes x-sink or x-sump has stored so far (cheap: counts files)."""
        return count_files(self.results_dir) + count_files(self.sump_dir)

    def sink_phases(self) -> dict[str, str]:
        phases: dict[str, str] = {}
        for record in read_records(self.results_dir):
            phases[str(record.get("id"))] = str((record.get("status") or {}).get("phase"))
        return phases

    def sump_records(self) -> list[dict[str, Any]]:
        return read_records(self.sump_dir)

    def calls(self) -> list[Call]:
        calls: list[Call] = []
        for path in sorted(self.calls_dir.glob("calls-*.log")):
            for line in path.read_text().splitlines():
                envelope_id, _, at = line.partition(" ")
                if at:
                    calls.append(Call(envelope_id, float(at)))
        return calls

    async def settle(self, ids: Sequence[str], *, timeout: float, quiet_s: float = 6.0) -> None:
        """Until every id is stored by x-sink or x-sump (or `timeout` passes: what is missing
        then is lost), and then until the last hop has had no new call for `quiet_s`, so that a
        late redelivery still counts as a duplicate."""
        key_of = {records.key(i): i for i in ids}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stored = stored_keys(self.results_dir) | stored_keys(self.sump_dir)
            if key_of.keys() <= stored:
                break
            await asyncio.sleep(0.2)
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            calls = sum(p.stat().st_size for p in self.calls_dir.glob("calls-*.log"))
            if calls != seen:
                seen, since = calls, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            await asyncio.sleep(0.2)

    def outcome(self, scenario: str, ids: Sequence[str]) -> Outcome:
        sump_ids = [str(r.get("id")) for r in self.sump_records()]
        return tally(
            scenario=scenario,
            transport=self.ctx.transport,
            sent=ids,
            sink_phases=self.sink_phases(),
            sump_ids=sump_ids,
            calls=self.calls(),
            fault_times=self.fault_times,
            seconds=time.monotonic() - self.started,
        )

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


async def sidecar_health(port: int) -> tuple[int, str]:
    """(status code, reason) from a sidecar's /healthz; (0, why) when nothing answers."""
    try:
        async with asyncio.timeout(2.0):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: faults\r\nConnection: close\r\n\r\n")
                await writer.drain()
                answer = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return 0, f"no answer: {type(exc).__name__}"
    head, _, body = answer.partition(b"\r\n\r\n")
    code = head.split(b" ", 2)[1:2]
    try:
        reason = str(json.loads(body).get("reason"))
    except ValueError:
        reason = body.decode(errors="replace")[:100]
    return (int(code[0]) if code and code[0].isdigit() else 0), reason


def count_files(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for e in entries if e.name.endswith(".json"))
    except FileNotFoundError:
        return 0


def stored_keys(directory: Path) -> set[str]:
    try:
        with os.scandir(directory) as entries:
            return {e.name for e in entries if e.name.endswith(".json")}
    except FileNotFoundError:
        return set()


def read_records(directory: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(directory.glob("*.json")) if directory.exists() else []:
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being replaced right now; the store writes a new file and renames it
    return found


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float
) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
