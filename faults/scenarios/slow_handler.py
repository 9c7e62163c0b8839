"""Scenario 6: a middle handler that runs 3x the broker's lease on a message.

The lease is lowered for the run (faults.harness.LEASE_ENV): the embedded transport's
ASYA_LOCAL_LEASE_SECONDS 3 s, SQS's visibility timeout (ASYA_SQS_VISIBILITY_TIMEOUT) 5 s and
Pub/Sub's ack deadline (ASYA_PUBSUB_ACK_DEADLINE) 10 s, the emulator's minimum. b's handler
then works 3x that (9, 15 and 30 s) on every envelope, and the sidecar must keep extending
the lease (at a third of it) so that the broker never hands the message to anyone else: no
envelope may be called twice at b (b's handler records every call, and b has free slots, so a
message whose lease ran out would be taken again at once) nor reach c twice.

RabbitMQ has no lease to extend: a delivery stays with its consumer for as long as the
channel lives, bounded only by the broker's `consumer_timeout` (30 minutes by default; a
handler running longer makes the broker close the channel, and every unacknowledged
delivery on it is requeued and redelivered: duplicates, and a consumer that must reconnect).
Nothing in Asya extends it: a handler that may run longer needs the broker's consumer_timeout
raised (per queue with the `x-consumer-timeout` argument, or globally). Here, RabbitMQ runs
the same pipeline with a handler of a few seconds and expects no duplicates either.
"""

from __future__ import annotations

import collections
import math

from faults.harness import LEASE_ENV, Context, Run, Sizes, step_actors
from faults.outcome import Outcome
from faults.scenarios import Scenario

NAME = "slow-handler"
LEASE_VARIABLE = {
    "local": "ASYA_LOCAL_LEASE_SECONDS",
    "sqs": "ASYA_SQS_VISIBILITY_TIMEOUT",
    "pubsub": "ASYA_PUBSUB_ACK_DEADLINE",
}
LEASE_MULTIPLE = 3
RABBITMQ_WORK_S = 4.0
# Twice as many slots as envelopes in flight at once, so that a message whose lease ran out
# is taken again at once by a free slot (a duplicate that shows).
IN_FLIGHT = 8
MIDDLE_CONCURRENCY = 2 * IN_FLIGHT

SIZES = {
    # Every envelope is slow, so `faults` (the number of slow envelopes) equals `envelopes`.
    "short": Sizes(envelopes=8, faults=8),
    "default": Sizes(envelopes=24, faults=24),
    "long": Sizes(envelopes=100, faults=100),
}


def lease_for(transport: str) -> float | None:
    variable = LEASE_VARIABLE.get(transport)
    return float(LEASE_ENV[variable]) if variable else None


async def slow_handler(ctx: Context) -> Outcome:
    lease = lease_for(ctx.transport)
    work_s = LEASE_MULTIPLE * lease if lease is not None else RABBITMQ_WORK_S
    actors = step_actors(middle_concurrency=MIDDLE_CONCURRENCY, middle_handler="slow.middle")
    async with Run(ctx, actors) as run:
        ids = run.ids(ctx.sizes.envelopes)
        rounds = math.ceil(len(ids) / IN_FLIGHT)
        for n in range(rounds):
            batch = ids[n * IN_FLIGHT : (n + 1) * IN_FLIGHT]
            for _ in batch:
                run.fault()
            await run.feed_ids(batch, work_s=work_s)
            # The next batch once this one is through b, so that b always has free slots.
            await run.at_progress((n + 1) * IN_FLIGHT if n + 1 < rounds else len(ids),
                                  timeout=work_s * 4 + 120)  # fmt: skip
        # Quiet for longer than a lease: a message whose lease ran out would be back by then.
        await run.settle(ids, timeout=120, quiet_s=(lease or RABBITMQ_WORK_S) + 5)
        outcome = run.outcome(NAME, ids)
        middle_calls: collections.Counter[str] = collections.Counter()
        for path in run.calls_dir.glob("middle-*.log"):
            for line in path.read_text().splitlines():
                middle_calls[line.partition(" ")[0]] += 1
        twice = {i: n for i, n in middle_calls.items() if n > 1}
        ctx.log(
            f"slow-handler on {ctx.transport}: lease {lease} s, handler {work_s:g} s,"
            f" {sum(middle_calls.values())} calls at b for {len(ids)} envelopes"
        )
        outcome.check(outcome.lost == 0, f"{outcome.lost} envelope(s) lost")
        outcome.check(outcome.duplicates == 0, f"{outcome.duplicates} duplicate(s) at c")
        outcome.check(not twice, f"called more than once at b (lease not extended?): {twice}")
        outcome.check(outcome.succeeded == len(ids), f"{outcome.succeeded} of {len(ids)} succeeded")
        return outcome


SCENARIOS = [Scenario(NAME, "a handler running 3x the lease", slow_handler, SIZES)]
