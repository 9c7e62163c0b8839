"""Scenario 5: poison. A tenth of the envelopes are bad, mixed in among good ones:

- `nojson`: not JSON at all. It has no id, so the sidecar of a gives its x-sump record a new
  one (a uuid); the record keeps the original bytes (`payload.original`), which carry a marker
  naming the envelope, and that is how the verifier finds it (reason ParseError).
- `noroute`: valid JSON with no `route` (ParseError; the record keeps the envelope's id).
- `wrongcurr`: `route.curr` names c, but it is sent to a's queue (WrongActor).
- `oversize`: a body over the broker's size limit. Where the transport's limit is under 16 MiB
  (SQS: 1 MiB, the most SQS takes; Pub/Sub: 10 MB), the body is max(2 MB, limit + 1 KiB), and
  the feeder's transport refuses it before any request (MessageTooLarge), as the broker would:
  it cannot be sent, and is counted as not sent. Where the limit is huge (RabbitMQ's
  configured `max_message_size`, 128 MiB here; the embedded transport, 256 MiB), a 2 MB body
  is within the limit, so it is not bad there; one body of limit + 1 KiB per run (sent before
  anything is measured, it is large to build) checks that it is refused, and its places in
  the mix go to good envelopes.
- `raise`: b's handler raises for it on every attempt; b's policy for that error allows 3
  attempts, so it ends failed with reason PolicyExhausted at attempt 3.
- `die`: routed a -> k -> c, where k's handler SIGKILLs its own runtime for it. The sidecar
  requeues it; having been in flight at a death it is a suspect, and its next calls run
  alone; once the runtime has died under it CRASH_ALONE_LIMIT times while it ran alone, it
  is failed as RuntimeCrashed (asya_sidecar/crash_ledger.py). So k's runtime dies at most
  1 + CRASH_ALONE_LIMIT times per such envelope (checked), and the good envelopes that
  shared a death with it are not failed. Few of these (Sizes.faults): each costs restarts,
  which the supervisor, like a kubelet, spaces out with a growing delay (0.5 s doubling to
  10 s), and k takes nothing while its runtime is down.

Also checked: every good one succeeded, no sidecar exited at all (only k's runtime is
expected to die), and no envelope reached c twice.

Good envelopes go a -> b -> c, and one in 20 goes a -> k -> c instead, so that some good ones
are in flight at k's runtime when it dies (they are requeued; counted as duplicates at c if
they ever run twice there). The latency bound is checked on the good ones through b: k is
stalled by its own restarts by design, and that is what a crashing handler costs its actor,
not the pipeline.

Latency: the feeder stamps `sent_at` (wall clock) in every payload, paced at a steady rate so
that a backlog does not masquerade as delay; an envelope's latency is x-sink's record
`status.updated_at` (set when c took it) minus `sent_at`. The N envelopes are fed in CHUNKS
consecutive chunks, every other one poison-free and the others with twice the bad share (a
tenth overall): the good ones of the clean chunks give the normal latency, under the same
machine load as the poisoned chunks they alternate with (a warm-up batch before, fed the same
way, is logged but not compared: other work on a shared machine comes and goes). The check is
that the median and the 95th percentile of the good ones in poisoned chunks are at most 1 s
above those of the clean chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asya_cli.manifests import ActorManifest
from asya_sidecar.crash_ledger import CRASH_ALONE_LIMIT
from asya_transports import MessageTooLarge
from faults.harness import Context, Run, Sizes, read_records, step_actors, wait_for
from faults.outcome import Outcome
from faults.scenarios import Scenario

NAME = "poison"
BAD_SHARE = 0.10
RAISE_ATTEMPTS = 3  # b's policy for PoisonError
KILLER_CONCURRENCY = 2
K_GOOD_EVERY = 20
CHUNKS = 8  # one good envelope in this many goes through k
DELAY_BOUND_S = 1.0
HUGE_LIMIT = 16 * 1024 * 1024  # above this, an oversize body is too costly to build per envelope
TWO_MB = 2_000_000
SETTLE_TIMEOUT_S = 600.0
B_RESILIENCY: Mapping[str, Any] = {
    "policies": {
        "default": {"maxAttempts": 1},
        "poison": {"maxAttempts": RAISE_ATTEMPTS, "backoff": "constant", "initialDelay": "0.2s"},
    },
    "rules": [{"errors": ["PoisonError"], "policy": "poison"}],
}
KINDS = ("nojson", "noroute", "wrongcurr", "oversize", "raise")

SIZES = {
    # faults: how many self-killing envelopes (each costs up to 1 + CRASH_ALONE_LIMIT restarts)
    "short": Sizes(envelopes=200, faults=1),
    "default": Sizes(envelopes=2000, faults=2),
    "long": Sizes(envelopes=10000, faults=5),
}


def rate_for(ctx: Context) -> float:
    """Envelopes per second the feeder sends: well under what the pipeline takes, so that the
    latency measured is the pipeline's, not a queue's."""
    return 12.0 if ctx.transport == "sqs" else 25.0


@dataclass
class Plan:
    """What is sent, by kind; `goods` are the ids whose latency is measured."""

    goods: list[str] = field(default_factory=list)  # in poisoned chunks
    clean_goods: list[str] = field(default_factory=list)  # in poison-free chunks
    k_goods: list[str] = field(default_factory=list)
    bad: dict[str, list[str]] = field(default_factory=dict)
    not_sent: list[str] = field(default_factory=list)  # refused before reaching the broker
    sent: list[str] = field(default_factory=list)  # ids x-sink or x-sump must hold

    def all_goods(self) -> list[str]:
        return self.goods + self.clean_goods + self.k_goods


def actors() -> list[ActorManifest]:
    found = step_actors(middle_handler="poison.middle", resiliency=dict(B_RESILIENCY))
    found.append(
        ActorManifest(
            name="k", handler="poison.killer", source="faults", concurrency=KILLER_CONCURRENCY
        )
    )
    return found


def oversize_body(run: Run, envelope_id: str, size: int) -> bytes:
    head = run.envelope(envelope_id, sent_at=time.time(), pad="")
    pad = size - len(head)
    marker = b'"pad": ""'
    return head.replace(marker, b'"pad": "' + b"x" * pad + b'"')


Item = tuple[str, str, Callable[[], bytes], bool]  # id, actor, body factory, is a fault


async def send_paced(run: Run, items: Sequence[Item], rate: float) -> list[str]:
    """Send (id, actor, body factory, is_fault) at `rate` per second; returns the ids the
    transport refused as too large. Each body is built just before its send, so that huge
    ones do not all sit in memory, and its payload's `sent_at` is its send time."""
    refused: list[str] = []

    async def send(envelope_id: str, actor: str, body: bytes) -> None:
        try:
            await run.transport.send(run.pipeline.queue(actor), body)
        except MessageTooLarge:
            refused.append(envelope_id)

    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()
    for n, (envelope_id, actor, build, is_fault) in enumerate(items):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the feed, not waiting for a condition
        if is_fault:
            run.fault()
        tasks.append(asyncio.create_task(send(envelope_id, actor, build())))
    await asyncio.gather(*tasks)
    return refused


def body_for(run: Run, kind: str, envelope_id: str, limit: int) -> bytes:
    """The body of one envelope of `kind` ("good", "k-good" or a bad kind), built at
    its send time (its payload's `sent_at`)."""
    if kind == "nojson":
        return f"not json: nojson-{envelope_id} {{".encode()
    if kind == "noroute":
        return json.dumps(
            {"id": envelope_id, "headers": {}, "payload": {"id": envelope_id}}
        ).encode()
    if kind == "wrongcurr":
        return run.envelope(envelope_id, ("c",))
    if kind == "oversize":
        return oversize_body(run, envelope_id, max(TWO_MB, limit + 1024))
    route = ("a", "k", "c") if kind in ("k-good", "die") else ("a", "b", "c")
    extra = {"poison": kind} if kind in ("raise", "die") else {}
    return run.envelope(envelope_id, route, sent_at=time.time(), **extra)


def plan_items(run: Run, ctx: Context, count: int) -> tuple[Plan, list[Item]]:
    limit = run.transport.max_message_bytes
    ids = run.ids(count)
    bad_count = max(len(KINDS) + ctx.sizes.faults, round(count * BAD_SHARE))
    chunk = math.ceil(count / CHUNKS)
    poisoned = [i for n, i in enumerate(ids) if (n // chunk) % 2 == 1]
    bad_ids = set(ctx.rng.sample(poisoned, bad_count))
    kinds = ["die"] * ctx.sizes.faults
    kinds += [KINDS[n % len(KINDS)] for n in range(bad_count - len(kinds))]
    ctx.rng.shuffle(kinds)
    kind_of = dict(zip(sorted(bad_ids), kinds, strict=True))
    poisoned_set = set(poisoned)
    plan = Plan(bad={kind: [] for kind in (*KINDS, "die")})
    items: list[Item] = []
    good_n = 0
    for envelope_id in ids:
        kind = kind_of.get(envelope_id, "good")
        if kind == "good":
            good_n += 1
            if good_n % K_GOOD_EVERY == 0:
                kind = "k-good"
                plan.k_goods.append(envelope_id)
            elif envelope_id in poisoned_set:
                plan.goods.append(envelope_id)
            else:
                plan.clean_goods.append(envelope_id)
        elif kind == "oversize" and limit > HUGE_LIMIT:
            # 2 MB is within the limit here, so it would be a large good envelope, which
            # slows its neighbours by itself (about 1 s each on the embedded transport):
            # not what this scenario measures. A plain good one takes its place.
            kind = "good"
            (plan.goods if envelope_id in poisoned_set else plan.clean_goods).append(envelope_id)
        else:
            plan.bad[kind].append(envelope_id)
        build = functools.partial(body_for, run, kind, envelope_id, limit)
        items.append((envelope_id, "a", build, kind in plan.bad))
    return plan, items


def latencies(run: Run, ids: Sequence[str]) -> list[float]:
    wanted = set(ids)
    found = []
    for record in read_records(run.results_dir):
        if record.get("id") not in wanted:
            continue
        sent_at = (record.get("payload") or {}).get("sent_at")
        done = parse_time((record.get("status") or {}).get("updated_at"))
        if isinstance(sent_at, float | int) and done is not None:
            found.append(done - float(sent_at))
    return found


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (
        f"median {statistics.median(values):.3f} s, p95 {p95(values):.3f} s, "
        f"max {max(values):.3f} s over {len(values)}"
    )


def nojson_records(run: Run, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The x-sump records of the not-JSON bodies, by the id in their marker."""
    markers = {f"nojson-{i} ": i for i in ids}
    found: dict[str, dict[str, Any]] = {}
    for record in run.sump_records():
        original = (record.get("payload") or {}).get("original")
        if not isinstance(original, str) or not original.startswith("not json: "):
            continue
        for marker, envelope_id in markers.items():
            if marker in original:
                found[envelope_id] = record
    return found


def check_bad(outcome: Outcome, plan: Plan, sump: Mapping[str, dict[str, Any]]) -> None:
    expected = {
        "nojson": "ParseError",
        "noroute": "ParseError",
        "wrongcurr": "WrongActor",
        "oversize": "",  # never sent
        "raise": "PolicyExhausted",
        "die": "RuntimeCrashed",
    }
    for kind, ids in plan.bad.items():
        if kind == "oversize":
            continue
        wrong: list[str] = []
        for envelope_id in ids:
            record = sump.get(envelope_id)
            if record is None:
                wrong.append(f"{envelope_id}: not in x-sump")
                continue
            status = record.get("status") or {}
            error = status.get("error") or {}
            if status.get("reason") != expected[kind]:
                wrong.append(f"{envelope_id}: reason {status.get('reason')}")
            elif kind == "raise" and (
                status.get("attempt") != RAISE_ATTEMPTS
                or not str(error.get("type")).endswith("PoisonError")
            ):
                wrong.append(
                    f"{envelope_id}: attempt {status.get('attempt')} of"
                    f" {status.get('max_attempts')}, error {error.get('type')}"
                )
            elif kind == "die" and "during this envelope" not in str(error.get("message")):
                wrong.append(f"{envelope_id}: {error.get('message')}")
            elif kind in ("nojson", "noroute") and status.get("actor") != "a":
                wrong.append(f"{envelope_id}: failed by {status.get('actor')}")
        outcome.check(
            not wrong,
            f"{kind} ({len(ids)}, expected {expected[kind]}): {'; '.join(wrong[:5])}",
        )


async def poison(ctx: Context) -> Outcome:
    async with Run(ctx, actors()) as run:
        limit = run.transport.max_message_bytes
        rate = rate_for(ctx)
        refused_huge: list[str] = []
        if limit > HUGE_LIMIT:
            # One body over the huge limit, before anything is measured (it is large to build).
            refused_huge = await send_paced(
                run,
                [
                    (
                        "o-huge",
                        "a",
                        functools.partial(body_for, run, "oversize", "o-huge", limit),
                        True,
                    )
                ],
                rate,
            )
            ctx.log(f"poison: a body of {limit + 1024} bytes refused: {bool(refused_huge)}")
        count = ctx.envelopes
        warm_ids = run.ids(20, prefix="w")
        warm_items: list[Item] = [
            (i, "a", functools.partial(body_for, run, "good", i, limit), False) for i in warm_ids
        ]
        await send_paced(run, warm_items, rate)
        await run.settle(warm_ids, timeout=SETTLE_TIMEOUT_S, quiet_s=1.0)
        warm = latencies(run, warm_ids)

        plan, items = plan_items(run, ctx, count)
        refused = await send_paced(run, items, rate)
        plan.not_sent = sorted(refused)
        unexpected = set(refused) - set(plan.bad["oversize"])
        sent_ids = [i for i, _, _, _ in items if i not in refused]
        nojson = set(plan.bad["nojson"])
        keyed = [i for i in sent_ids if i not in nojson]
        await run.settle([*warm_ids, *keyed], timeout=SETTLE_TIMEOUT_S)
        with contextlib.suppress(TimeoutError):  # what is missing then is counted as lost
            await wait_for(
                lambda: len(nojson_records(run, plan.bad["nojson"])) == len(nojson),
                "the not-JSON bodies in x-sump",
                timeout=60,
            )

        outcome = run.outcome(NAME, [*warm_ids, *keyed])
        found_nojson = nojson_records(run, plan.bad["nojson"])
        outcome.sent += len(nojson)
        outcome.in_sump += len(found_nojson)
        outcome.lost += len(nojson) - len(found_nojson)
        sump = {str(r.get("id")): r for r in run.sump_records()}
        sump.update(found_nojson)

        outcome.check(outcome.lost == 0, f"{outcome.lost} envelope(s) lost")
        outcome.check(not unexpected, f"refused as too large, unexpectedly: {sorted(unexpected)}")
        outcome.check(
            len(refused) == len(plan.bad["oversize"]),
            f"{len(refused)} of {len(plan.bad['oversize'])} oversize bodies refused",
        )
        if limit > HUGE_LIMIT:
            outcome.check(bool(refused_huge), f"a body of {limit + 1024} bytes was accepted")
        phases = run.sink_phases()
        not_ok = [i for i in [*warm_ids, *plan.all_goods()] if phases.get(i) != "succeeded"]
        outcome.check(
            not not_ok,
            f"{len(not_ok)} good envelope(s) did not succeed: "
            + ", ".join(
                f"{i} ({phases.get(i) or sump.get(i, {}).get('status')})" for i in not_ok[:5]
            ),
        )
        check_bad(outcome, plan, sump)

        during = latencies(run, plan.goods)
        clean = latencies(run, plan.clean_goods)
        ctx.log(f"poison on {ctx.transport}: warm-up latency {summary(warm)}")
        ctx.log(f"poison on {ctx.transport}: good ones in clean chunks {summary(clean)}")
        ctx.log(f"poison on {ctx.transport}: good ones during poison {summary(during)}")
        through_k = summary(latencies(run, plan.k_goods))
        ctx.log(f"poison on {ctx.transport}: good ones through k {through_k}")
        ctx.log(
            f"poison on {ctx.transport}: bad sent "
            + ", ".join(f"{k} {len(v)}" for k, v in plan.bad.items())
            + f"; not sent (too large) {len(refused) + len(refused_huge)}"
        )
        if clean and during:
            for what, measure in (("median", statistics.median), ("p95", p95)):
                normal, poisoned = measure(clean), measure(during)
                outcome.check(
                    poisoned <= normal + DELAY_BOUND_S,
                    f"good ones' {what} latency {poisoned:.3f} s during poison vs {normal:.3f} s"
                    f" in clean chunks: more than {DELAY_BOUND_S:g} s later",
                )
        else:
            outcome.fail("no latency measured")

        supervisor = run.pipeline.supervisor
        sidecars = [s.name for s in run.pipeline.specs if s.name.endswith("/sidecar")]
        crashed = {n: supervisor.exit_codes(n) for n in sidecars if supervisor.exit_codes(n)}
        outcome.check(not crashed, f"sidecars exited: {crashed}")
        killer_exits = supervisor.exit_codes("k/runtime")
        ctx.log(
            f"poison on {ctx.transport}: k's runtime died {len(killer_exits)} times for"
            f" {len(plan.bad['die'])} self-killing envelope(s); duplicates {outcome.duplicates}"
        )
        # Per killer: the death that made it a suspect, then CRASH_ALONE_LIMIT alone.
        most = (1 + CRASH_ALONE_LIMIT) * len(plan.bad["die"])
        outcome.check(
            len(plan.bad["die"]) <= len(killer_exits) <= most,
            f"k's runtime died {len(killer_exits)} times; expected"
            f" {len(plan.bad['die'])} to {most}",
        )
        outcome.check(outcome.duplicates == 0, f"{outcome.duplicates} duplicate(s) at c")
        return outcome


SCENARIOS = [Scenario(NAME, "10% poison among good envelopes", poison, SIZES)]
