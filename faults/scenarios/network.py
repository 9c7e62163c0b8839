"""Scenario 7: the broker's port blackholed between the sidecars and the broker.

Every sidecar (the pipeline's and the crew's) reaches the broker through a TCP proxy the
scenario controls (faults/proxy.py); the feeder and the queue set-up go direct, so envelopes
keep arriving in the first queue while the sidecars are cut off, as a producer elsewhere in
the cluster would keep sending. A blackhole drops packets silently, like a firewall rule: no
reset, no end of stream, so a sidecar notices only through its own timeouts and heartbeats.

Checked: nothing lost; the sidecars reconnect (a batch fed after the last restore finishes,
every id of it); duplicates per outage within BLACKHOLE_DUP_BOUND; the middle sidecar's
/healthz answers OK again within HEALTH_BACK_S of the restore. Whether it reported the
outage (not OK at some point while the port was blackholed) is logged per outage, and
required for outages longer than HEALTH_DETECT_S (see there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from asya_cli.local_pipeline import LocalPipeline
from asya_transports.rabbitmq import DEFAULT_URL as RABBITMQ_DEFAULT_URL
from faults.harness import Context, Run, Sizes, sidecar_health, step_actors, wait_for
from faults.outcome import Outcome
from faults.proxy import Proxy
from faults.scenarios import Scenario

MIDDLE_CONCURRENCY = 4
CONCURRENCY = {"a": 8, "b": MIDDLE_CONCURRENCY, "c": 8}  # as step_actors sets them
# Each delivery a hop holds when the port goes dark may be handled once more after it comes
# back: its lease ran out meanwhile (SQS, Pub/Sub: the heartbeat that extends it could not
# get through), or its publisher confirm or ack timed out and it was requeued (RabbitMQ). A
# delivery redone at a, b or c reaches the last hop again at most once, so an outage costs
# at most the three hops' prefetch (their concurrency) in extra calls of the last hop.
BLACKHOLE_DUP_BOUND = sum(CONCURRENCY.values())
# The middle sidecar's /healthz must answer OK again this soon after the restore (the
# receivers back off at most 30 s between attempts; the rest is the reconnect itself).
HEALTH_BACK_S = 60.0
HEALTH_POLL_S = 0.25
# A silent blackhole shows only through the sidecar's own timeouts: a send or publisher
# confirm gives up after 30 s (RabbitMQ, Pub/Sub), an SQS long poll after its 20 s + 8 s
# read timeout, a held Pub/Sub pull through the check after 20 s + 10 s; an idle RabbitMQ
# consumer only through missed heartbeats (about 3 minutes at the broker's default 60 s).
# So an outage longer than HEALTH_DETECT_S must show in /healthz (on RabbitMQ only with
# envelopes in flight, which the long profile has); what it said is logged either way.
REQUIRE_HEALTH_DOWN = True
HEALTH_DETECT_S = {"sqs": 35.0, "rabbitmq": 35.0, "pubsub": 35.0}
SETTLE_TIMEOUT_S = 600.0
AFTER_BATCH = 30  # envelopes fed after the last restore

SIZES = {
    "short": Sizes(envelopes=150, faults=1),
    "default": Sizes(envelopes=2000, faults=2),
    "long": Sizes(envelopes=10000, faults=3),
}
# The issue asks for 30 s; the long profile holds 60 s so that the outage also outlasts the
# sidecars' send timeouts and /healthz has to show it (HEALTH_DETECT_S).
BLACKHOLE_S = {SIZES["short"]: 5.0, SIZES["default"]: 15.0, SIZES["long"]: 60.0}


def via_proxy(ctx: Context, port: int) -> dict[str, str]:
    """The broker settings that point a process at the proxy on `port` instead."""
    if ctx.transport == "rabbitmq":
        direct = urlsplit(ctx.broker.env.get("ASYA_RABBITMQ_URL") or rabbitmq_url())
        auth = direct.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
        return {"ASYA_RABBITMQ_URL": urlunsplit(direct._replace(netloc=netloc))}
    if ctx.transport == "sqs":
        return {"ASYA_SQS_ENDPOINT": f"http://127.0.0.1:{port}"}
    if ctx.transport == "pubsub":
        return {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}"}
    raise ValueError(f"the {ctx.transport} transport has no network to blackhole")


def rabbitmq_url() -> str:
    return os.environ.get("ASYA_RABBITMQ_URL") or RABBITMQ_DEFAULT_URL


def sidecars_through(settings: Mapping[str, str]) -> Callable[[LocalPipeline], None]:
    """A `prepare` for Run: every sidecar gets `settings`; the runtimes never talk to the
    broker, and the harness's own transport (built from the pipeline's base environment)
    keeps going direct."""

    def prepare(pipeline: LocalPipeline) -> None:
        pipeline.specs = [
            dataclasses.replace(spec, env={**spec.env, **settings})
            if spec.role == "sidecar"
            else spec
            for spec in pipeline.specs
        ]

    return prepare


async def healthz(port: int) -> tuple[bool, str]:
    """(OK?, reason) from a sidecar's /healthz; a sidecar that does not answer is not OK."""
    status, reason = await sidecar_health(port)
    return status == 200, reason


@dataclass
class HealthLog:
    """What b's /healthz said, polled through one outage and its recovery."""

    polls: int = 0  # during the outage
    down_polls: int = 0  # of which not OK
    first_down_s: float | None = None  # into the outage
    first_reason: str = ""
    back_after_s: float | None = None  # restore -> first OK

    def __str__(self) -> str:
        down = (
            f"not OK from {self.first_down_s:.1f}s ({self.down_polls}/{self.polls} polls: "
            f"{self.first_reason})"
            if self.first_down_s is not None
            else f"OK in all {self.polls} polls"
        )
        back = "never OK again" if self.back_after_s is None else f"{self.back_after_s:.1f}s"
        return f"during the outage {down}; OK again {back} after the restore"


async def watch_outage(run: Run, proxy: Proxy, port: int, seconds: float) -> HealthLog:
    health = HealthLog()
    proxy.blackhole()
    began = time.monotonic()
    try:
        while time.monotonic() - began < seconds:
            ok, reason = await healthz(port)
            health.polls += 1
            if not ok:
                health.down_polls += 1
                if health.first_down_s is None:
                    health.first_down_s = time.monotonic() - began
                    health.first_reason = reason
            await asyncio.sleep(HEALTH_POLL_S)  # the poll interval, not a synchronisation
    finally:
        proxy.restore()
    restored = time.monotonic()

    async def healthy() -> bool:
        return (await healthz(port))[0]

    try:
        await wait_for(healthy, "b's /healthz to answer OK", HEALTH_BACK_S)
        health.back_after_s = time.monotonic() - restored
    except TimeoutError:
        run.ctx.log(f"b/sidecar not healthy {HEALTH_BACK_S:g}s after the restore")
    return health


async def network_blackhole(ctx: Context) -> Outcome:
    seconds = BLACKHOLE_S.get(ctx.sizes, 5.0)
    async with (
        Proxy(ctx.broker.port) as proxy,
        Run(
            ctx,
            step_actors(middle_concurrency=MIDDLE_CONCURRENCY),
            prepare=sidecars_through(via_proxy(ctx, proxy.port)),
        ) as run,
    ):
        port = next(s.health_port for s in run.pipeline.specs if s.name == "b/sidecar")
        assert port is not None
        ids = run.ids(ctx.envelopes)
        feeding = asyncio.create_task(run.feed_ids(ids))
        outages: list[HealthLog] = []
        for threshold in run.thresholds(len(ids), ctx.sizes.faults):
            await run.at_progress(threshold)
            await asyncio.sleep(ctx.rng.uniform(0, 0.2))
            run.fault()
            ctx.log(f"blackholing the broker's port for {seconds:g}s (at {threshold})")
            outages.append(await watch_outage(run, proxy, port, seconds))
            ctx.log(f"restored; b's /healthz: {outages[-1]}")
        await feeding
        # Fed only now: these can finish only through connections made or kept alive
        # across the outage, which is what "the sidecars reconnected" means.
        after = run.ids(AFTER_BATCH, prefix="r")
        await run.feed_ids(after)
        everything = [*ids, *after]
        await run.settle(everything, timeout=SETTLE_TIMEOUT_S)
        outcome = run.outcome("network-blackhole", everything)
        finished_after = set(run.sink_phases()) | {str(r.get("id")) for r in run.sump_records()}
    outcome.check(outcome.lost == 0, f"{outcome.lost} envelope(s) lost")
    missing_after = [i for i in after if i not in finished_after]
    outcome.check(
        not missing_after,
        f"{len(missing_after)} of the {AFTER_BATCH} envelopes fed after the restore never "
        f"finished: the sidecars did not reconnect",
    )
    outcome.check(
        outcome.max_dup_per_fault <= BLACKHOLE_DUP_BOUND,
        f"{outcome.max_dup_per_fault} duplicates after one outage; the bound is "
        f"{BLACKHOLE_DUP_BOUND} (the prefetch of a, b and c)",
    )
    for n, health in enumerate(outages, 1):
        outcome.check(
            health.back_after_s is not None,
            f"outage {n}: b's /healthz still not OK {HEALTH_BACK_S:g}s after the restore",
        )
        if REQUIRE_HEALTH_DOWN and seconds > HEALTH_DETECT_S[ctx.transport]:
            outcome.check(
                health.first_down_s is not None,
                f"outage {n}: b's /healthz said OK all {seconds:g}s the broker was "
                f"unreachable ({health.polls} polls)",
            )
    return outcome


SCENARIOS = [
    Scenario(
        "network-blackhole",
        "the broker's port blackholed between the sidecars and the broker",
        network_blackhole,
        SIZES,
        transports=("rabbitmq", "sqs", "pubsub"),
    )
]
