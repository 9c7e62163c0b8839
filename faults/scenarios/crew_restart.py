"""Scenario 9, as two scenarios: x-join killed in the middle of its joins (`join-kill`), and
tasks paused at x-pause across full restarts of every process (`pause-restart`).

join-kill: split -> work -> x-join -> c. Each envelope fed to split fans out into PARTS parts,
which work handles and x-join gathers into one joined envelope (the origin's id) for c. x-join's
runtime and sidecar are SIGKILLed in turn while parts arrive; the supervisor restarts them. Every
join must reach x-sink, succeeded, with every part's result in order. x-join publishes a joined
envelope and then marks the join done: a runtime killed in between (while it waits for the
broker to confirm the publish, or just after) leaves the join claimed but not done, and the
sweeper publishes it again once the claim's lease ends. That is the at-least-once cost of a
join (docs/reliability.md, "Known limits"), so c may be called twice for a join, at most once
more per kill (JOIN_DUP_PER_KILL); four long runs on RabbitMQ measured 4 such duplicates in
80 kills.

pause-restart: tasks submitted through the gateway along a -> x-pause -> b -> c all pause; then,
`faults` times, every process is stopped (SIGTERM: sidecars drain) and a new pipeline is started
on the same state directory and namespace (the gateway's SQLite store, the queues, x-join's store
all survive), and one slice of the paused tasks is resumed through the new gateway's API (the
slices resumed earlier may still be in flight at the next restart). Every task must succeed at the
gateway and in x-sink, with c called once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import httpx

from asya_cli import dev_plan
from asya_cli.local_pipeline import LocalPipeline
from asya_cli.manifests import ActorManifest
from asya_crew.joinstore import JoinStore, open_join_store
from asya_shared import env, names
from faults.harness import (
    HANDLERS,
    LEASE_ENV,
    READY_TIMEOUT_S,
    Context,
    Run,
    Sizes,
    read_records,
    step_actors,
    wait_for,
)
from faults.outcome import Outcome
from faults.scenarios import Scenario
from faults.scenarios.gateway_kill import at_least, list_all, wait_all_ended

SETTLE_TIMEOUT_S = 600.0
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

# --------------------------------------------------------------------------- join-kill

PARTS = 10  # per join
# x-join runs one runtime call at a time: a kill interrupts at most one publish of a joined
# envelope, which the sweeper then publishes again.
JOIN_DUP_PER_KILL = 1
WORK_S = 0.01  # per part, at work's concurrency 2: the parts trickle in while x-join dies
JOIN_ROUTE = ("split", "work", names.JOIN, "c")
JOIN_PROCESSES = (f"{names.JOIN}/runtime", f"{names.JOIN}/sidecar")
# A join whose claimer was killed before it published waits out the claim's lease before the
# sweeper takes it over: short here, so the run does not wait a minute for each.
JOIN_ENV = {env.JOIN_SWEEP_INTERVAL: "0.5s", env.JOIN_LEASE: "10s"}

JOIN_SIZES = {  # envelopes: parts in all (joins x PARTS)
    "short": Sizes(envelopes=200, faults=2),
    "default": Sizes(envelopes=2000, faults=6),
    "long": Sizes(envelopes=10000, faults=20),
}


def join_actors() -> list[ActorManifest]:
    return [
        ActorManifest(name="split", handler="joins.split", source="faults", concurrency=4),
        ActorManifest(name="work", handler="joins.work", source="faults", concurrency=2),
        ActorManifest(name="c", handler="steps.last", source="faults", concurrency=8),
    ]


def joins_for(ctx: Context) -> int:
    parts = ctx.envelopes
    return max(1, parts // PARTS)


async def join_kill(ctx: Context) -> Outcome:
    async with Run(ctx, join_actors(), extra_env=JOIN_ENV) as run:
        ids = run.ids(joins_for(ctx), prefix="j")
        supervisor = run.pipeline.supervisor
        store = open_join_store(dev_plan.join_store_url(run.pipeline.state_dir))
        await store.open()
        try:
            feeding = asyncio.create_task(
                run.feed(
                    ("split", run.envelope(i, JOIN_ROUTE, parts=PARTS, work_s=WORK_S)) for i in ids
                )
            )
            victims = list(JOIN_PROCESSES)
            ctx.rng.shuffle(victims)
            for n, threshold in enumerate(kill_points(ctx, len(ids))):
                process = victims[n % len(victims)]
                await run.at_progress(threshold)
                await asyncio.sleep(ctx.rng.uniform(0, 0.2))
                # Mid-join: some join has parts in the store and waits for more. At the end of
                # a run there may be none left; then the kill hits an idle x-join.
                with contextlib.suppress(TimeoutError):
                    await wait_for(lambda: parts_held(store), "parts in the join store", 10)
                held = await store.held()
                restarted = supervisor.restarts(process) + 1
                run.fault()
                os.kill(supervisor.pid(process), signal.SIGKILL)
                ctx.log(f"killed {process} with {held} (joins, parts) held")
                await wait_for(
                    at_least(partial(supervisor.restarts, process), restarted),
                    f"{process} to be restarted after kill {n + 1}",
                    timeout=60,
                )
            await feeding
            await run.settle(ids, timeout=SETTLE_TIMEOUT_S)
            outcome = run.outcome("join-kill", ids)
            await wait_for(
                lambda: held_nothing(store), "the join store to hold nothing", timeout=30
            )
        except TimeoutError as exc:
            outcome = run.outcome("join-kill", ids)
            outcome.fail(str(exc))
        finally:
            held = await store.held()
            await store.close()
        check_joins(outcome, run, ids)
        outcome.check(held == (0, 0), f"the join store still holds (joins, parts) {held}")
        codes = {p: supervisor.exit_codes(p) for p in JOIN_PROCESSES}
        outcome.check(
            all(c == [-signal.SIGKILL] * len(c) for c in codes.values()),
            f"x-join exit codes {codes}, expected {-signal.SIGKILL} each",
        )
        return outcome


def kill_points(ctx: Context, joins: int) -> list[int]:
    """Joins finished when each kill comes: in the first half of the run, so that parts are
    still arriving after the last kill and its restart."""
    low, high = max(1, joins // 20), max(2, joins // 2)
    return sorted(ctx.rng.randint(low, high) for _ in range(ctx.sizes.faults))


async def parts_held(store: JoinStore) -> bool:
    _, parts = await store.held()
    return parts > 0


async def held_nothing(store: JoinStore) -> bool:
    return bool(await store.held() == (0, 0))


def check_joins(outcome: Outcome, run: Run, ids: Sequence[str]) -> None:
    outcome.check(outcome.lost == 0, f"{outcome.lost} join(s) with no joined output")
    outcome.check(
        outcome.max_dup_per_fault <= JOIN_DUP_PER_KILL,
        f"{outcome.max_dup_per_fault} extra joined output(s) at c after one kill; the bound is"
        f" {JOIN_DUP_PER_KILL} (the join being published when x-join died)",
    )
    outcome.check(outcome.in_sump == 0, f"{outcome.in_sump} join(s) ended in x-sump")
    expected = [2 * i for i in range(PARTS)]
    wanted = set(ids)
    wrong = [
        str(r.get("id"))
        for r in read_records(run.results_dir)
        if r.get("id") in wanted and (r.get("payload") or {}).get("results") != expected
    ]
    outcome.check(not wrong, f"{len(wrong)} joined output(s) without every part: {wrong[:5]}")


# ----------------------------------------------------------------------- pause-restart

PAUSE_ROUTE = ("a", names.PAUSE, "b", "c")
PAUSE_SIZES = {  # envelopes: tasks paused; faults: full restarts
    "short": Sizes(envelopes=40, faults=1),
    "default": Sizes(envelopes=300, faults=2),
    "long": Sizes(envelopes=1000, faults=3),
}
SUBMITTERS = 8


def gateway_url(pipeline: LocalPipeline) -> str:
    if pipeline.gateway is None:
        raise RuntimeError("the pipeline runs no gateway")
    return pipeline.gateway.url


async def each(ids: Sequence[str], call: Any) -> None:
    """`call(id)` for every id, SUBMITTERS at a time."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for task_id in ids:
        queue.put_nowait(task_id)

    async def worker() -> None:
        while not queue.empty():
            await call(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(SUBMITTERS)))


async def restart_everything(run: Run, out: Any) -> None:
    """Stop every process of the run's pipeline and start a new pipeline on the same state
    directory and namespace (as `asya dev` stopped and started again would); the run goes on
    with the new one."""
    old = run.pipeline
    await old.stop()
    new = LocalPipeline(
        old.actors,
        transport=old.settings.transport,
        state_dir=old.state_dir,
        namespace=old.settings.namespace,
        workdir=HANDLERS,
        out=out,
        extra_env={**LEASE_ENV, "FAULTS_CALLS_DIR": str(run.calls_dir)},
        gateway_port=0,
    )
    # Set before starting, so that the run stops it even when it does not come up.
    run.pipeline = new
    await new.start(READY_TIMEOUT_S)


async def pause_restart(ctx: Context) -> Outcome:
    with contextlib.ExitStack() as stack:
        async with Run(ctx, step_actors(), gateway=True) as run:
            out = stack.enter_context(run.log_path.open("a"))
            ids = run.ids(ctx.envelopes, prefix="p")
            wanted = set(ids)
            problems: list[str] = []
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:

                async def submit(task_id: str) -> None:
                    body = {"id": task_id, "route": list(PAUSE_ROUTE), "payload": {"id": task_id}}
                    url = gateway_url(run.pipeline)
                    response = await client.post(f"{url}/v1/tasks", json=body)
                    if response.status_code != 201:
                        problems.append(f"submit {task_id}: HTTP {response.status_code}")

                await each(ids, submit)

                async def all_paused() -> bool:
                    paused = await list_all(client, gateway_url(run.pipeline), "paused")
                    return wanted <= {t["id"] for t in paused}

                await wait_for(all_paused, f"{len(ids)} tasks paused", timeout=SETTLE_TIMEOUT_S)
                slices = [ids[k :: ctx.sizes.faults] for k in range(ctx.sizes.faults)]
                for k, part in enumerate(slices):
                    run.fault()
                    started = time.monotonic()
                    await restart_everything(run, out)
                    ctx.log(
                        f"restart {k + 1}: every process back in {time.monotonic() - started:.1f}s"
                    )

                    async def resume(task_id: str, k: int = k) -> None:
                        url = gateway_url(run.pipeline)
                        response = await client.post(
                            f"{url}/v1/tasks/{task_id}/resume", json={"input": {}}
                        )
                        if response.status_code != 200:
                            problems.append(
                                f"resume {task_id} after restart {k + 1}: HTTP "
                                f"{response.status_code} {response.text[:200]}"
                            )

                    await each(part, resume)
                await run.settle(ids, timeout=SETTLE_TIMEOUT_S)
                outcome = run.outcome("pause-restart", ids)
                url = gateway_url(run.pipeline)
                stuck = await wait_all_ended(client, url, wanted)
                succeeded = {t["id"]: t for t in await list_all(client, url, "succeeded")}
    outcome.check(outcome.lost == 0, f"{outcome.lost} resumed task(s) never reached x-sink")
    outcome.check(
        outcome.duplicates == 0, f"{outcome.duplicates} duplicate call(s) at c; the bound is 0"
    )
    outcome.check(outcome.succeeded == len(ids), f"{len(ids) - outcome.succeeded} not succeeded")
    outcome.check(not problems, f"the gateway refused: {problems[:5]}")
    outcome.check(not stuck, f"{len(stuck)} task(s) not ended: {dict(list(stuck.items())[:5])}")
    missing = sorted(wanted - succeeded.keys())
    outcome.check(
        not missing, f"{len(missing)} task(s) not succeeded at the gateway: {missing[:5]}"
    )
    trail = ["a", "b", "c"]
    wrong = [
        i for i in ids if i in succeeded and (succeeded[i]["result"] or {}).get("trail") != trail
    ]
    outcome.check(not wrong, f"{len(wrong)} task(s) with a wrong result: {wrong[:5]}")
    return outcome


SCENARIOS = [
    Scenario("join-kill", "SIGKILL x-join mid-join", join_kill, JOIN_SIZES),
    Scenario("pause-restart", "paused tasks across full restarts", pause_restart, PAUSE_SIZES),
]
