"""Reading the sump and redriving its records; the decisions are asya_shared.redrive's.

A redrive removes a record from the sump only once the transport returned from the send: a
failed send leaves it there, to be redriven again. A record removed since it was listed (a
redrive running elsewhere) is skipped, never an error.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import asya_transports as transports
from asya_shared import names, records, redrive, stores
from asya_shared.redrive import Filters, Redrive, Summary

__all__ = [
    "MISSING_DETAIL",
    "NOT_SENT",
    "REDRIVEN",
    "REFUSED",
    "WOULD_REDRIVE",
    "Connect",
    "Outcome",
    "QueueOf",
    "queue_namer",
    "read_all",
    "read_one",
    "redrive_records",
    "summaries",
]

QueueOf = Callable[[str], str]  # an actor's queue name on the chosen transport
# Opens the transport the redrive sends with, only when there is something to send: the CLI
# connects and disconnects, the gateway lends the transport it already holds.
Connect = Callable[[], contextlib.AbstractAsyncContextManager[transports.Transport]]

REDRIVEN, WOULD_REDRIVE, REFUSED, NOT_SENT = "redriven", "would redrive", "refused", "not sent"
MISSING_DETAIL = "no sump record for this id"


@dataclass(frozen=True)
class Outcome:
    """What happened to one selected record."""

    id: str
    to: str
    result: str
    detail: str = ""
    missing: bool = False  # refused because no record has this id (the API answers 404)

    @property
    def ok(self) -> bool:
        return self.result in (REDRIVEN, WOULD_REDRIVE) and not self.detail

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "to": self.to, "result": self.result, "detail": self.detail}


def queue_namer(namespace: str, kind: str) -> QueueOf:
    """Actor -> its queue on transport `kind` in `namespace`. Raises names.InvalidName for a
    bad namespace up front, rather than on the first record."""
    names.queue_name(namespace, "probe")

    def queue_of(actor: str) -> str:
        return names.check_queue_name(names.queue_name(namespace, actor), kind)

    return queue_of


# ------------------------------------------------------------------------------------ reading


async def read_all(store: stores.ResultStore) -> list[tuple[str, dict[str, Any]]]:
    """Every record in the store as (key, record); what is not a JSON object is skipped."""
    found = []
    for key in await store.list():
        item = _decode(await store.get(key))
        if item is None:
            # Removed since the listing (a redrive running elsewhere), or not a record.
            continue
        found.append((key, item))
    return found


async def read_one(store: stores.ResultStore, envelope_id: str) -> dict[str, Any] | None:
    return _decode(await store.get(records.key(envelope_id)))


async def summaries(store: stores.ResultStore, filters: Filters) -> list[Summary]:
    """The records `filters` select, as `asya sump ls` lists them: newest failure first."""
    rows = (redrive.summarize(item) for _, item in await read_all(store))
    return redrive.newest_first(row for row in rows if redrive.matches(row, filters))


# ------------------------------------------------------------------------------------ redrive


async def redrive_records(
    store: stores.ResultStore,
    *,
    ids: Sequence[str],
    filters: Filters,
    dry_run: bool,
    connect: Connect,
    queue_of: QueueOf,
    now: datetime.datetime,
) -> list[Outcome]:
    """Redrive the records named by `ids` (in that order), or else those `filters` select
    (newest failure first); one outcome per record, and per id that has none."""
    selected, outcomes = await _select(store, ids, filters)
    planned: list[tuple[str, str, Redrive]] = []
    for key, envelope_id, item in selected:
        step = redrive.plan(item, now=now)
        if isinstance(step, redrive.Refused):
            outcomes.append(Outcome(envelope_id, "", REFUSED, step.why))
        elif dry_run:
            outcomes.append(Outcome(envelope_id, step.to, WOULD_REDRIVE))
        else:
            planned.append((key, envelope_id, step))
    if planned:
        async with connect() as transport:
            for key, envelope_id, step in planned:
                outcome = await _send_one(store, transport, queue_of, key, envelope_id, step)
                outcomes.append(outcome)
    order = {envelope_id: index for index, envelope_id in enumerate(ids)}
    return sorted(outcomes, key=lambda outcome: order.get(outcome.id, len(order)))


async def _send_one(
    store: stores.ResultStore,
    transport: transports.Transport,
    queue_of: QueueOf,
    key: str,
    envelope_id: str,
    step: Redrive,
) -> Outcome:
    try:
        queue = queue_of(step.to)
        # The envelope has exactly a record's fields: the same JSON the crew writes.
        await transport.send(queue, records.encode(cast(records.Record, step.envelope)))
    except (names.InvalidName, transports.TransportError) as exc:
        hint = ""
        if isinstance(exc, transports.QueueNotFound):
            hint = f" (is actor {step.to!r} running on this transport and namespace?)"
        return Outcome(envelope_id, step.to, NOT_SENT, f"{exc}{hint}; the record stays")
    try:
        await store.delete(key)
    except stores.StoreError as exc:
        # Sent: redriving this record again would send it twice.
        return Outcome(
            envelope_id, step.to, REDRIVEN, f"sent, but the record stays in the sump ({exc}); "
            "remove it before redriving again",
        )  # fmt: skip
    return Outcome(envelope_id, step.to, REDRIVEN)


async def _select(
    store: stores.ResultStore, ids: Sequence[str], filters: Filters
) -> tuple[list[tuple[str, str, dict[str, Any]]], list[Outcome]]:
    """The records to redrive as (key, id, record), and an outcome for each id not found."""
    if ids:
        selected, missing = [], []
        for envelope_id in dict.fromkeys(ids):  # each once, in the order given
            key = records.key(envelope_id)
            item = _decode(await store.get(key))
            if item is None:
                missing.append(Outcome(envelope_id, "", REFUSED, MISSING_DETAIL, missing=True))
            else:
                selected.append((key, envelope_id, item))
        return selected, missing
    chosen = []
    for key, item in await read_all(store):
        summary = redrive.summarize(item)
        if redrive.matches(summary, filters):
            chosen.append((key, summary, item))
    # The order of `asya sump ls`: newest failure first, ties by id.
    chosen.sort(key=lambda entry: entry[1].id)
    chosen.sort(key=lambda entry: redrive.failure_time(entry[1]), reverse=True)
    return [(key, summary.id, item) for key, summary, item in chosen], []


def _decode(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        item = json.loads(data)
    except ValueError:
        return None
    return item if isinstance(item, dict) else None
