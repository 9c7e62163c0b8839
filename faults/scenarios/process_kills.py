"""Scenarios 1-3: the middle actor's sidecar killed (SIGKILL) or stopped (SIGTERM), or its
runtime killed, again and again while envelopes flow; the supervisor restarts the process
after a growing delay, as a kubelet would."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time

from asya_cli.supervisor import Supervisor
from faults.harness import Context, Run, Sizes, step_actors, wait_for
from faults.outcome import Outcome
from faults.scenarios import Scenario

MIDDLE_CONCURRENCY = 4
# At most every envelope b holds (its concurrency) may have been published to c and not yet
# acknowledged when b dies, and each of them may also have a publish in flight.
KILL_DUP_BOUND = 2 * MIDDLE_CONCURRENCY
GRACE_S = 10.0  # ASYA_SHUTDOWN_TIMEOUT for the SIGTERM scenario; a kubelet's grace is 30 s
EXIT_SLACK_S = 5.0  # the process's own shutdown after the drain (closing connections)
SETTLE_TIMEOUT_S = 600.0

SIZES = {
    "short": Sizes(envelopes=150, faults=2),
    "default": Sizes(envelopes=2000, faults=5),
    "long": Sizes(envelopes=10000, faults=20),
}


async def _kill_repeatedly(
    ctx: Context, scenario: str, process: str, signum: signal.Signals
) -> tuple[Outcome, list[float]]:
    """Feed, inject `ctx.sizes.faults` signals to `process` at random progress points, settle.
    Returns the outcome and how long each signalled process took to exit."""
    exits: list[float] = []
    extra_env = {"ASYA_SHUTDOWN_TIMEOUT": str(GRACE_S)}
    async with Run(
        ctx,
        step_actors(middle_concurrency=MIDDLE_CONCURRENCY),
        extra_env=extra_env,
    ) as run:
        ids = run.ids(ctx.envelopes)
        feeding = asyncio.create_task(run.feed_ids(ids))
        supervisor = run.pipeline.supervisor
        for n, threshold in enumerate(run.thresholds(len(ids), ctx.sizes.faults)):
            await run.at_progress(threshold)
            # A little random delay, so faults do not always land right after a write.
            await asyncio.sleep(ctx.rng.uniform(0, 0.2))
            run.fault()
            signalled = time.monotonic()
            os.kill(supervisor.pid(process), signum)
            await wait_for(
                functools.partial(_exited_times, supervisor, process, n + 1),
                f"{process} to exit after signal {n + 1}",
                timeout=GRACE_S + 60,
            )
            exits.append(time.monotonic() - signalled)
            await wait_for(
                functools.partial(_restarted_times, supervisor, process, n + 1),
                f"{process} to be restarted after signal {n + 1}",
                timeout=60,
            )
            if signum == signal.SIGTERM:
                # A kubelet stops running containers; one stopped while it is still starting
                # holds nothing and is not what this scenario measures.
                await wait_for(
                    functools.partial(_healthy, run, process.split("/")[0]),
                    f"{process} to be healthy again after signal {n + 1}",
                    timeout=60,
                )
        await feeding
        await run.settle(ids, timeout=SETTLE_TIMEOUT_S)
        outcome = run.outcome(scenario, ids)
        outcome.check(outcome.lost == 0, f"{outcome.lost} envelope(s) lost")
        codes = supervisor.exit_codes(process)
        expected = -signum if signum == signal.SIGKILL else 0
        outcome.check(
            codes == [expected] * len(codes),
            f"{process} exit codes {codes}, expected {expected} each",
        )
        # No envelope is hit by enough of these faults to run out of deliveries.
        outcome.check(
            outcome.succeeded == outcome.sent,
            f"{outcome.sent - outcome.succeeded} envelope(s) did not succeed",
        )
        return outcome, exits


async def _healthy(run: Run, actor: str) -> bool:
    return await run.healthz(actor) == 200


def _exited_times(supervisor: Supervisor, process: str, times: int) -> bool:
    return len(supervisor.exit_codes(process)) >= times


def _restarted_times(supervisor: Supervisor, process: str, times: int) -> bool:
    return supervisor.restarts(process) >= times


async def sidecar_kill(ctx: Context) -> Outcome:
    outcome, _ = await _kill_repeatedly(ctx, "sidecar-kill", "b/sidecar", signal.SIGKILL)
    outcome.check(
        outcome.max_dup_per_fault <= KILL_DUP_BOUND,
        f"{outcome.max_dup_per_fault} duplicates after one kill; the bound is {KILL_DUP_BOUND}"
        f" (b's concurrency {MIDDLE_CONCURRENCY} + as many publishes in flight)",
    )
    return outcome


async def sidecar_term(ctx: Context) -> Outcome:
    outcome, exits = await _kill_repeatedly(ctx, "sidecar-term", "b/sidecar", signal.SIGTERM)
    outcome.check(outcome.duplicates == 0, f"{outcome.duplicates} duplicate(s) after a drain")
    slow = [round(s, 1) for s in exits if s > GRACE_S + EXIT_SLACK_S]
    outcome.check(not slow, f"exits took {slow} s; the grace is {GRACE_S:g} s")
    return outcome


async def runtime_kill(ctx: Context) -> Outcome:
    outcome, _ = await _kill_repeatedly(ctx, "runtime-kill", "b/runtime", signal.SIGKILL)
    outcome.check(
        outcome.max_dup_per_fault <= KILL_DUP_BOUND,
        f"{outcome.max_dup_per_fault} duplicates after one kill; the bound is {KILL_DUP_BOUND}",
    )
    return outcome


SCENARIOS = [
    Scenario("sidecar-kill", "SIGKILL the middle sidecar", sidecar_kill, SIZES),
    Scenario("sidecar-term", "SIGTERM the middle sidecar (drain)", sidecar_term, SIZES),
    Scenario("runtime-kill", "SIGKILL the middle runtime", runtime_kill, SIZES),
]
