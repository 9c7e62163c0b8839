"""What becomes of a deleted actor's queue: the deletion policy as a table."""

from __future__ import annotations

import pytest

from asya_operator import deletion
from asya_operator.deletion import Context, Delete, Keep, Leave, Measure
from asya_operator.models import DeletionPolicy

IF_EMPTY, DELETE, RETAIN = (
    DeletionPolicy.DELETE_IF_EMPTY,
    DeletionPolicy.DELETE,
    DeletionPolicy.RETAIN,
)
Q, T = "asya-ns-a", "rabbit"


def ctx(
    policy: DeletionPolicy = IF_EMPTY,
    *,
    queue: str | None = Q,
    transport: str | None = T,
    configured: bool = True,
) -> Context:
    return Context(queue=queue, transport=transport, configured=configured, policy=policy)


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (
            ctx(queue=None),
            Leave("no queue was ever created for this actor; nothing to remove"),
        ),
        (
            ctx(transport=None),
            Leave("no queue was ever created for this actor; nothing to remove"),
        ),
        # No queue: the policy does not matter.
        (
            ctx(DELETE, queue=None, configured=False),
            Leave("no queue was ever created for this actor; nothing to remove"),
        ),
        (
            ctx(RETAIN, configured=False),
            Keep(
                f"queue {Q} kept: transport 'rabbit' is no longer configured in the operator",
                logged=False,
            ),
        ),
        (ctx(RETAIN), Leave(f"queue {Q} kept on {T} (deletionPolicy Retain)")),
        (ctx(IF_EMPTY), Measure(Q, T)),
        # Delete measures as well: a queue that is gone needs no deleting.
        (ctx(DELETE), Measure(Q, T)),
    ],
)
def test_decide(context: Context, expected: Leave | Keep | Measure) -> None:
    assert deletion.decide(context) == expected


KEPT_WITH_MESSAGES = (
    f"queue {Q} on {T} kept: it still holds 2 message(s) (deletionPolicy DeleteIfEmpty); "
    "drain or delete it by hand, or set spec.queue.deletionPolicy: Delete before deleting "
    "the actor"
)
KEPT_UNCOUNTED = (
    f"queue {Q} on {T} kept: the broker cannot tell whether it is empty (deletionPolicy "
    "DeleteIfEmpty); delete it by hand, or set spec.queue.deletionPolicy: Delete before "
    "deleting the actor"
)


@pytest.mark.parametrize(
    ("policy", "depth", "expected"),
    [
        (IF_EMPTY, 0, Delete()),
        (IF_EMPTY, 2, Keep(KEPT_WITH_MESSAGES)),
        (IF_EMPTY, None, Keep(KEPT_UNCOUNTED)),
        (DELETE, 0, Delete()),
        (DELETE, 2, Delete()),
        (DELETE, None, Delete()),
    ],
)
def test_decide_on_depth(
    policy: DeletionPolicy, depth: int | None, expected: Delete | Keep
) -> None:
    assert deletion.decide_on_depth(ctx(policy), depth) == expected


def test_refused() -> None:
    assert deletion.refused(ctx(), "access denied") == Keep(
        f"queue {Q} kept: access denied", logged=False
    )
