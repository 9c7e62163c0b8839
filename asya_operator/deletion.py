"""What becomes of an actor's queue when the AsyncActor is deleted: pure decisions, no I/O.

spec.queue.deletionPolicy says what the user wants:

    DeleteIfEmpty  (default) delete the queue unless messages wait in it
    Delete         delete it with whatever is in it
    Retain         never delete it

The queue and transport come from the status (what the operator created), not from the spec.
The decision takes two steps, because whether a queue is empty needs the broker:
`decide` answers Leave, Keep or Measure; after Measure the handler reads the depth (which
also tells whether the queue still exists) and `decide_on_depth` answers Delete or Keep.
handlers.remove_queue carries the decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass

from asya_operator.models import DeletionPolicy


@dataclass(frozen=True)
class Context:
    queue: str | None  # from the status; None: no queue was ever created
    transport: str | None
    configured: bool  # the transport is still in the operator's configuration
    policy: DeletionPolicy


@dataclass(frozen=True)
class Leave:
    """Nothing to do: there is no queue, or the policy keeps it. Logged, not warned about."""

    message: str


@dataclass(frozen=True)
class Keep:
    """The queue stays although the user may expect it gone: a QueueRetained warning Event."""

    message: str
    logged: bool = True  # the message also goes to the operator's log, at warning level


@dataclass(frozen=True)
class Measure:
    """Read the depth of this queue, then `decide_on_depth`."""

    queue: str
    transport: str


@dataclass(frozen=True)
class Delete:
    """Delete the queue and its messages."""


def decide(ctx: Context) -> Leave | Keep | Measure:
    if not ctx.queue or not ctx.transport:
        return Leave("no queue was ever created for this actor; nothing to remove")
    if not ctx.configured:
        return Keep(
            f"queue {ctx.queue} kept: transport {ctx.transport!r} is no longer configured "
            "in the operator",
            logged=False,
        )
    if ctx.policy == DeletionPolicy.RETAIN:
        return Leave(f"queue {ctx.queue} kept on {ctx.transport} (deletionPolicy Retain)")
    # Delete measures too: a queue that is gone already needs no deleting.
    return Measure(ctx.queue, ctx.transport)


def decide_on_depth(ctx: Context, depth: int | None) -> Delete | Keep:
    """`depth` None: the broker cannot count the messages (Pub/Sub)."""
    if ctx.policy == DeletionPolicy.DELETE or depth == 0:
        return Delete()
    where = f"queue {ctx.queue} on {ctx.transport}"
    if depth is None:
        return Keep(
            f"{where} kept: the broker cannot tell whether it is empty (deletionPolicy "
            "DeleteIfEmpty); delete it by hand, or set spec.queue.deletionPolicy: Delete "
            "before deleting the actor"
        )
    return Keep(
        f"{where} kept: it still holds {depth} message(s) (deletionPolicy DeleteIfEmpty); "
        "drain or delete it by hand, or set spec.queue.deletionPolicy: Delete before "
        "deleting the actor"
    )


def refused(ctx: Context, error: str) -> Keep:
    """The broker refused to measure or delete the queue; trying again would not help."""
    return Keep(f"queue {ctx.queue} kept: {error}", logged=False)
