"""Publishing the envelopes a gateway recorded but may not have published, and ending the
pauses nobody resumed in time.

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

The outbox holds every envelope the gateway sends for a task, not only a submitted one: a
resume's continuation, and x-sink's record of a pause that expired or was canceled. Each
goes to the queue of its own `route.curr`, whatever the task's status, and the sweep
claims any task whose outbox still holds one.

The same loop ends expired pauses (`expire`): the store fails each such task once across
replicas (reason PauseExpired) and puts x-sink's record of it in the outbox, which is
published at once (or by a later sweep, should this gateway die first).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Callable

import asya_transports as transports
from asya_gateway import submit
from asya_gateway.store.base import Store, StoreError, Unpublished
from asya_shared import names

__all__ = [
    "SWEEP_EVERY_S",
    "WAIT_S",
    "destination",
    "expire",
    "publish",
    "republish",
    "republish_loop",
]

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
            if not await publish(store, transport, item, namespace=namespace):
                return count
            count += 1
            log.info("task %s was recorded but not published: published it now", item.task.id)
        if len(claimed) < CLAIM_BATCH:
            return count


def destination(item: Unpublished) -> str:
    """The actor the outbox's envelope goes to: its route.curr (the task's for an envelope
    that does not say, as no gateway writes)."""
    try:
        curr = json.loads(item.envelope)["route"]["curr"]
    except (ValueError, KeyError, TypeError):
        curr = None
    return curr if isinstance(curr, str) and curr else item.task.route["curr"]


async def publish(
    store: Store, transport: transports.Broker, item: Unpublished, *, namespace: str
) -> bool:
    """Send the outbox's envelope and empty the outbox; False when the broker refused it
    (the outbox keeps it for the next sweep). StoreError when the store fails after the
    send: the next sweep sends it again."""
    try:
        queue = names.queue_name(namespace, destination(item))
    except names.InvalidName as exc:
        log.error("task %s: its envelope cannot be published: %s", item.task.id, exc)
        return False
    try:
        await transport.send(queue, item.envelope.encode())
    except transports.TransportError as exc:
        log.warning(
            "task %s: publishing its envelope to %s failed (next try in %.0fs): %s",
            item.task.id, queue, SWEEP_EVERY_S, exc,
        )  # fmt: skip
        return False
    await store.published(item.task.id, item.envelope)
    return True


async def expire(
    store: Store, transport: transports.Broker, *, namespace: str, now: datetime.datetime
) -> int:
    """Fail the pauses that expired before `now` and send x-sink their record; how many."""
    count = 0
    while True:
        claimed = await store.expire_pauses(now=submit.timestamp(now), limit=CLAIM_BATCH)
        for item in claimed:
            log.info("task %s: its pause expired; failed it (PauseExpired)", item.task.id)
            await publish(store, transport, item, namespace=namespace)
        count += len(claimed)
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
    """Sweep now and every `interval` seconds, until cancelled: expired pauses first, then
    the outboxes left unpublished."""
    while True:
        try:
            await expire(store, transport, namespace=namespace, now=clock())
        except StoreError as exc:
            log.warning("looking for expired pauses failed (next try in %.0fs): %s", interval, exc)
        try:
            await republish(store, transport, namespace=namespace, now=clock(), wait=wait)
        except StoreError as exc:
            log.warning(
                "looking for unpublished tasks failed (next try in %.0fs): %s", interval, exc
            )
        await asyncio.sleep(interval)
