"""Publishing the envelopes a gateway recorded but may not have published.

A submit records the task, with its envelope in the task's outbox, then publishes the
envelope and empties the outbox. A gateway killed between the two (SIGKILL, a node lost)
leaves a pending task whose envelope no broker has: without this sweep it would stay
pending for ever. Every gateway replica sweeps now and then: a pending task whose envelope
has waited longer than `wait` seconds (far longer than a publish takes) is claimed in the
store, so that one replica sends it, and published again.

The cost is at-least-once: a gateway that died after the broker took an envelope but before
it emptied the outbox has that envelope sent twice, and the task runs twice (the later
reports of the second run are ignored once the first has ended the task). Handlers already
live with that: brokers redeliver too.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable

import asya_transports as transports
from asya_gateway import submit
from asya_gateway.store.base import Store, StoreError
from asya_shared import names

__all__ = ["SWEEP_EVERY_S", "WAIT_S", "republish", "republish_loop"]

log = logging.getLogger("asya.gateway.outbox")

SWEEP_EVERY_S = 10.0
WAIT_S = 30.0  # an envelope younger than this may still be on its way from its POST
CLAIM_BATCH = 200


async def republish(
    store: Store,
    transport: transports.Broker,
    *,
    namespace: str,
    now: datetime.datetime,
    wait: float = WAIT_S,
) -> int:
    """Publish the envelopes waiting longer than `wait` seconds before `now`; how many.
    Stops at the first publish the broker refuses (it is down: the next sweep tries again);
    StoreError when the store fails."""
    count = 0
    while True:
        claimed = await store.claim_unpublished(
            submit.timestamp(now - datetime.timedelta(seconds=wait)),
            now=submit.timestamp(now),
            limit=CLAIM_BATCH,
        )
        for item in claimed:
            queue = names.queue_name(namespace, item.task.route["curr"])
            try:
                await transport.send(queue, item.envelope.encode())
            except transports.TransportError as exc:
                log.warning(
                    "task %s was recorded but not published; publishing it again failed "
                    "(next try in %.0fs): %s",
                    item.task.id, SWEEP_EVERY_S, exc,
                )  # fmt: skip
                return count
            await store.published(item.task.id)
            count += 1
            log.info("task %s was recorded but not published: published it now", item.task.id)
        if len(claimed) < CLAIM_BATCH:
            return count


async def republish_loop(
    store: Store,
    transport: transports.Broker,
    *,
    namespace: str,
    clock: Callable[[], datetime.datetime],
    wait: float = WAIT_S,
    interval: float = SWEEP_EVERY_S,
) -> None:
    """Sweep now and every `interval` seconds, until cancelled."""
    while True:
        try:
            await republish(store, transport, namespace=namespace, now=clock(), wait=wait)
        except StoreError as exc:
            log.warning(
                "looking for unpublished tasks failed (next try in %.0fs): %s", interval, exc
            )
        await asyncio.sleep(interval)
