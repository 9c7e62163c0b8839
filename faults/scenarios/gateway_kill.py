"""Scenario 8: the gateway killed (SIGKILL) again and again while tasks submitted through its
API flow through a -> b -> c; the supervisor restarts it, as a kubelet would.

Tasks are submitted as a client should: with its own id, retried with that id until the
gateway answers (a second POST of an id returns the existing task and publishes nothing), so
each task is counted once however many times it was posted. The checks: x-sink holds every
task (lost 0), c handled each once (a gateway killed between publishing and noting it may
publish again after its outbox wait of 30 s; a report of the task empties the outbox before
then, so the bound is 0), every task ends `succeeded` at the gateway once it is back and none
stays pending or running, and x-sink's count grew during every outage that found work in
flight (the pipeline never waits on the gateway).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from faults.harness import ROUTE, Context, Run, Sizes, step_actors, wait_for
from faults.outcome import Outcome
from faults.scenarios import Scenario

GATEWAY = "gateway/gateway"
SUBMITTERS = 8  # concurrent clients posting tasks
RETRY_PAUSE_S = 0.1  # between two posts of one task while the gateway is away
# b is the bottleneck (concurrency 2, this long per task), slower than the submitters, so
# a backlog is in flight whenever the gateway dies.
MIDDLE_CONCURRENCY = 2
WORK_S = 0.05
SUBMIT_RATE = {"local": 80.0, "rabbitmq": 80.0, "sqs": 60.0, "pubsub": 60.0}  # tasks/s
RESTART_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 600.0
# Sidecars and x-sink post the reports they kept with a growing pause (at most 30 s), and
# a task recorded but never published waits 30 s in the outbox before the sweep sends it.
TERMINAL_TIMEOUT_S = 180.0
NOT_ENDED = ("pending", "running", "paused")
PAGE = 500

SIZES = {
    "short": Sizes(envelopes=100, faults=2),
    "default": Sizes(envelopes=1000, faults=5),
    "long": Sizes(envelopes=5000, faults=10),
}


@dataclass
class Feeder:
    """Posts every task until the gateway accepts it; counts what it took."""

    url: str
    rate: float
    accepted: set[str] = field(default_factory=set)
    posts: int = 0
    refused_while_down: int = 0  # connection errors and 503s, each retried
    unexpected: list[str] = field(default_factory=list)

    async def run(self, ids: Sequence[str]) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for task_id in ids:
            queue.put_nowait(task_id)
        started = time.monotonic()
        issued = 0

        async def next_slot() -> None:
            # Paced, so that submissions go on through the outages.
            nonlocal issued
            due = started + issued / self.rate
            issued += 1
            await asyncio.sleep(max(0.0, due - time.monotonic()))

        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0)) as client:

            async def submitter() -> None:
                while not queue.empty():
                    task_id = queue.get_nowait()
                    await next_slot()
                    await self.submit(client, task_id)

            await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))

    async def submit(self, client: httpx.AsyncClient, task_id: str) -> None:
        body = {
            "id": task_id,
            "route": list(ROUTE),
            "payload": {"id": task_id, "work_s": WORK_S},
        }
        while True:
            self.posts += 1
            try:
                response = await client.post(f"{self.url}/v1/tasks", json=body)
            except httpx.TransportError:
                self.refused_while_down += 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if response.status_code in (200, 201):
                self.accepted.add(task_id)
                return
            if response.status_code == 503 and "not_ready" in response.text:
                self.refused_while_down += 1  # restarted, store or broker not open yet
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            self.unexpected.append(f"{task_id}: HTTP {response.status_code} {response.text[:200]}")
            return


@dataclass(frozen=True)
class Outage:
    stored_at_exit: int  # x-sink's records when the killed gateway was gone
    stored_at_return: int  # ... and when the restarted one answered /healthz
    accepted_at_exit: int
    seconds: float


async def healthy(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def not_ended(client: httpx.AsyncClient, url: str, ids: set[str]) -> dict[str, str] | None:
    """Our tasks the gateway shows pending, running or paused; None while it is away."""
    found: dict[str, str] = {}
    try:
        for status in NOT_ENDED:
            for task in await list_all(client, url, status):
                if task["id"] in ids:
                    found[task["id"]] = status
    except httpx.TransportError:
        return None
    return found


async def list_all(client: httpx.AsyncClient, url: str, status: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"status": status, "limit": PAGE}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(f"{url}/v1/tasks", params=params)
        response.raise_for_status()
        page = response.json()
        tasks.extend(page["tasks"])
        cursor = page.get("next_cursor")
        if not cursor:
            return tasks


def at_least(count: Callable[[], int], wanted: int) -> Callable[[], bool]:
    return lambda: count() >= wanted


def kill_points(ctx: Context, total: int) -> list[int]:
    """How many tasks the gateway has taken when each kill comes. The submitters are faster
    than b, so a backlog is in flight at every kill, and submissions go on after it."""
    low, high = max(1, total // 10), max(2, total * 9 // 10)
    return sorted(ctx.rng.randint(low, high) for _ in range(ctx.sizes.faults))


async def gateway_kill(ctx: Context) -> Outcome:
    async with Run(ctx, step_actors(middle_concurrency=MIDDLE_CONCURRENCY), gateway=True) as run:
        assert run.pipeline.gateway is not None
        url = run.pipeline.gateway.url
        supervisor = run.pipeline.supervisor
        ids = run.ids(ctx.envelopes, prefix="g")
        feeder = Feeder(url, SUBMIT_RATE.get(ctx.transport, 40.0))
        feeding = asyncio.create_task(feeder.run(ids))
        outages: list[Outage] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0)) as client:
            for n, point in enumerate(kill_points(ctx, len(ids))):
                await wait_for(
                    at_least(lambda: len(feeder.accepted), point),
                    f"{point} tasks taken by the gateway",
                    timeout=SETTLE_TIMEOUT_S,
                )
                await asyncio.sleep(ctx.rng.uniform(0, 0.2))
                run.fault()
                os.kill(supervisor.pid(GATEWAY), signal.SIGKILL)
                await wait_for(
                    at_least(lambda: len(supervisor.exit_codes(GATEWAY)), n + 1),
                    f"the gateway to die after kill {n + 1}",
                    timeout=30,
                )
                exited = time.monotonic()
                stored_at_exit, accepted_at_exit = run.finished(), len(feeder.accepted)
                await wait_for(
                    at_least(lambda: supervisor.restarts(GATEWAY), n + 1),
                    f"the gateway to be restarted after kill {n + 1}",
                    timeout=RESTART_TIMEOUT_S,
                )
                await wait_for(
                    lambda: healthy(client, url),
                    f"the restarted gateway to answer /healthz after kill {n + 1}",
                    timeout=RESTART_TIMEOUT_S,
                )
                outage = Outage(
                    stored_at_exit,
                    run.finished(),
                    accepted_at_exit,
                    round(time.monotonic() - exited, 2),
                )
                ctx.log(f"gateway outage {n + 1}: {outage}")
                outages.append(outage)
            await feeding
            ctx.log(f"fed at {time.monotonic() - run.started:.1f}s")
            await run.settle(ids, timeout=SETTLE_TIMEOUT_S)
            ctx.log(f"settled at {time.monotonic() - run.started:.1f}s")
            outcome = run.outcome("gateway-kill", ids)
            stuck = await wait_all_ended(client, url, set(ids))
            ctx.log(f"ended at the gateway at {time.monotonic() - run.started:.1f}s")
            succeeded = {t["id"]: t for t in await list_all(client, url, "succeeded")}
        ctx.log(
            f"{feeder.posts} posts for {len(ids)} tasks, {feeder.refused_while_down} refused "
            "while the gateway was away"
        )
        check(outcome, ids, feeder, outages, stuck, succeeded, supervisor.exit_codes(GATEWAY))
        return outcome


async def wait_all_ended(client: httpx.AsyncClient, url: str, wanted: set[str]) -> dict[str, str]:
    """Until the gateway shows none of `wanted` pending, running or paused; what still is
    at the deadline."""
    deadline = time.monotonic() + TERMINAL_TIMEOUT_S
    left: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = await not_ended(client, url, wanted)
        if found is not None:
            left = found
            if not left:
                return {}
        await asyncio.sleep(0.5)
    return left


def check(
    outcome: Outcome,
    ids: Sequence[str],
    feeder: Feeder,
    outages: Sequence[Outage],
    stuck: dict[str, str],
    succeeded: dict[str, dict[str, Any]],
    exit_codes: Sequence[int],
) -> None:
    outcome.check(outcome.lost == 0, f"{outcome.lost} task(s) never reached x-sink")
    outcome.check(
        outcome.duplicates == 0,
        f"{outcome.duplicates} duplicate call(s) at c; the bound is 0",
    )
    outcome.check(not feeder.unexpected, f"submits refused: {feeder.unexpected[:5]}")
    outcome.check(
        len(feeder.accepted) == len(ids), f"{len(ids) - len(feeder.accepted)} task(s) not taken"
    )
    outcome.check(
        not stuck,
        f"{len(stuck)} task(s) not ended at the gateway after {TERMINAL_TIMEOUT_S:g}s: "
        f"{dict(list(stuck.items())[:5])}",
    )
    missing = [i for i in ids if i not in succeeded]
    outcome.check(
        not missing, f"{len(missing)} task(s) not succeeded at the gateway: {missing[:5]}"
    )
    wrong = [
        i
        for i in ids
        if i in succeeded and (succeeded[i].get("result") or {}).get("trail") != list(ROUTE)
    ]
    outcome.check(not wrong, f"{len(wrong)} task(s) with a wrong result: {wrong[:5]}")
    # An outage that found tasks in flight must see x-sink go on storing. Not every task taken
    # and not stored is in flight: each earlier kill may have left up to SUBMITTERS tasks
    # recorded but not published, waiting for the outbox sweep.
    stalled = [
        o
        for n, o in enumerate(outages)
        if o.accepted_at_exit - o.stored_at_exit > SUBMITTERS * n
        and o.stored_at_return == o.stored_at_exit
    ]
    outcome.check(not stalled, f"x-sink stored nothing while the gateway was down: {stalled}")
    outcome.check(
        any(o.stored_at_return > o.stored_at_exit for o in outages),
        f"no outage found work flowing, so none shows the pipeline going on: {list(outages)}",
    )
    outcome.check(
        list(exit_codes) == [-signal.SIGKILL] * len(exit_codes),
        f"gateway exit codes {list(exit_codes)}, expected {-signal.SIGKILL} each",
    )


SCENARIOS = [
    Scenario("gateway-kill", "SIGKILL the gateway during submitted tasks", gateway_kill, SIZES),
]
