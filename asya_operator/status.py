"""What an AsyncActor's status says: pure functions from what the operator saw to status fields.

Three conditions, each `True`, `False` or `Unknown` with a CamelCase reason:

    QueueReady     the actor's queue (and dead-letter queue) exists on its broker
    WorkloadReady  the Deployment has rolled out and its replicas are available
    ScalingReady   KEDA's ScaledObject is ready (or scaling is off)

and one word that sums them up for `kubectl get asya`:

    Creating     first rollout still in progress
    Running      serving
    Napping      KEDA scaled it to zero and nothing is queued
    Degraded     something is broken that may heal by itself (broker down, replicas
                 unavailable, a stuck rollout, KEDA not ready)
    Error        a problem only a change can fix (invalid spec, unknown transport, ...)
    Terminating  being deleted

The stored status is a models.AsyncActorStatus (parsed by observed.py); what the operator
decides now is a list of `Condition`s, merged into it by `next_status`, and `to_json` is
what gets written. Nothing here does I/O or reads the clock: callers pass `now`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asya_operator import models
from asya_operator.observed import Rollout, Scaler

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

QUEUE_READY = "QueueReady"
WORKLOAD_READY = "WorkloadReady"
SCALING_READY = "ScalingReady"
CONDITION_TYPES = (QUEUE_READY, WORKLOAD_READY, SCALING_READY)

CREATING = "Creating"
RUNNING = "Running"
NAPPING = "Napping"
DEGRADED = "Degraded"
ERROR = "Error"
TERMINATING = "Terminating"

# Reasons
QUEUE_EXISTS = "QueueExists"
QUEUE_MISSING = "QueueMissing"
BROKER_UNAVAILABLE = "BrokerUnavailable"
QUEUE_ERROR = "QueueError"
INVALID_SPEC = "InvalidSpec"
UNKNOWN_TRANSPORT = "UnknownTransport"
RENDER_ERROR = "RenderError"
APPLY_ERROR = "ApplyError"
WAITING_FOR_QUEUE = "WaitingForQueue"
PENDING = "Pending"
REPLICAS_READY = "ReplicasReady"
SCALED_TO_ZERO = "ScaledToZero"
REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
SCALING_DISABLED = "ScalingDisabled"
SCALER_READY = "ScalerReady"
SCALER_NOT_READY = "ScalerNotReady"
WAITING_FOR_KEDA = "WaitingForKeda"
KEDA_NOT_INSTALLED = "KedaNotInstalled"

# Reasons of a condition that is False until someone changes the spec or the configuration.
PERMANENT_REASONS = frozenset(
    {INVALID_SPEC, UNKNOWN_TRANSPORT, RENDER_ERROR, QUEUE_ERROR, APPLY_ERROR}
)


@dataclass(frozen=True)
class Condition:
    """One condition as decided now, before it is merged with what the status said."""

    type: str
    status: str
    reason: str
    message: str = ""


def timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second, as Kubernetes writes metav1.Time."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    old: Sequence[models.Condition],
    new: Iterable[Condition],
    *,
    now: str,
    generation: int | None,
) -> list[models.Condition]:
    """The conditions list after `new`: lastTransitionTime stays while the status stays.

    Conditions not in `new` are kept as they were; the result is ordered by type as in
    CONDITION_TYPES, then any foreign types in their old order."""
    merged = {item.type: item for item in old if item.type}
    for condition in new:
        previous = merged.get(condition.type)
        kept = previous is not None and previous.status == condition.status
        merged[condition.type] = models.Condition(
            type=condition.type,
            status=condition.status,
            reason=condition.reason,
            message=condition.message,
            last_transition_time=previous.last_transition_time if previous and kept else now,
            observed_generation=generation,
        )
    ordered = [merged.pop(kind) for kind in CONDITION_TYPES if kind in merged]
    return ordered + list(merged.values())


def find(conditions: Sequence[models.Condition], kind: str) -> models.Condition | None:
    return next((item for item in conditions if item.type == kind), None)


def is_permanent(condition: models.Condition | None) -> bool:
    """Whether the condition shows a problem only a change of spec or configuration fixes."""
    return (
        condition is not None
        and condition.status == FALSE
        and condition.reason in PERMANENT_REASONS
    )


def unless_permanent(
    conditions: Iterable[Condition], *, shown: Sequence[models.Condition]
) -> list[Condition]:
    """`conditions` without those that would replace a permanent problem `shown` now.

    For an observer (the status refresh): what it sees cannot clear a problem only a change
    fixes, so that stays on display until a reconcile clears it."""
    return [c for c in conditions if not is_permanent(find(shown, c.type))]


# -- QueueReady ---------------------------------------------------------------------------


def queue_ready(queue: str, transport: str) -> Condition:
    return Condition(QUEUE_READY, TRUE, QUEUE_EXISTS, f"queue {queue} exists on {transport}")


def broker_unavailable(transport: str, error: str) -> Condition:
    return Condition(
        QUEUE_READY,
        FALSE,
        BROKER_UNAVAILABLE,
        f"cannot reach the {transport} broker, retrying: {error}",
    )


def queue_error(transport: str, error: str) -> Condition:
    return Condition(QUEUE_READY, FALSE, QUEUE_ERROR, f"{transport} refused the queue: {error}")


def queue_missing(queue: str, transport: str) -> Condition:
    return Condition(
        QUEUE_READY,
        FALSE,
        QUEUE_MISSING,
        f"queue {queue} is gone from {transport}; the next resync creates it",
    )


def blocked(reason: str, message: str, kinds: Iterable[str] = CONDITION_TYPES) -> list[Condition]:
    """The same False condition for every stage a problem stops the reconcile before."""
    return [Condition(kind, FALSE, reason, message) for kind in kinds]


def workload_blocked(reason: str, message: str) -> list[Condition]:
    """A problem met once the queue exists: the workload and its scaling wait for a fix."""
    return blocked(reason, message, (WORKLOAD_READY, SCALING_READY))


def waiting_for_queue() -> list[Condition]:
    message = "the workload is applied once the queue exists"
    return [
        Condition(WORKLOAD_READY, UNKNOWN, WAITING_FOR_QUEUE, message),
        Condition(SCALING_READY, UNKNOWN, WAITING_FOR_QUEUE, message),
    ]


def queue_unreachable(
    transport: str, error: str, *, shown: Sequence[models.Condition]
) -> list[Condition]:
    """The broker is down, so the queue cannot be made sure of. The workload and scaling
    conditions say they wait for it only where they say nothing yet: an actor that was
    running keeps showing how its workload was."""
    waiting = [c for c in waiting_for_queue() if find(shown, c.type) is None]
    return [broker_unavailable(transport, error), *waiting]


def queue_refused(transport: str, error: str) -> list[Condition]:
    """The broker refused the queue: nothing after it can be applied."""
    return [queue_error(transport, error), *workload_blocked(QUEUE_ERROR, error)]


def unknown_transport(requested: str | None, configured: Iterable[str]) -> str:
    known = ", ".join(sorted(configured)) or "none"
    if requested:
        return f"transport {requested!r} is not configured in the operator; configured: {known}"
    return (
        "spec.transport is not set and the operator has no defaultTransport; "
        f"set spec.transport to one of: {known}"
    )


# -- WorkloadReady ------------------------------------------------------------------------


def workload_condition(rollout: Rollout | None) -> Condition:
    if rollout is None:
        return Condition(WORKLOAD_READY, UNKNOWN, PENDING, "the Deployment does not exist yet")
    generation, observed = rollout.generation, rollout.observed_generation
    if not rollout.reported or (
        generation is not None and (observed is None or observed < generation)
    ):
        return Condition(WORKLOAD_READY, UNKNOWN, PENDING, "waiting for the Deployment controller")
    ready, desired = rollout.ready, rollout.desired
    counts = f"{ready or 0}/{desired if desired is not None else '?'} replicas ready"
    progressing, available = rollout.progressing, rollout.available
    if progressing and progressing.status == FALSE:
        detail = progressing.message or "the rollout stopped making progress"
        return Condition(WORKLOAD_READY, FALSE, PROGRESS_DEADLINE_EXCEEDED, f"{detail} ({counts})")
    if desired == 0:
        return Condition(WORKLOAD_READY, TRUE, SCALED_TO_ZERO, "scaled to 0 replicas")
    if available and available.status == FALSE:
        detail = available.message or "minimum replicas unavailable"
        return Condition(WORKLOAD_READY, FALSE, REPLICAS_UNAVAILABLE, f"{detail} ({counts})")
    if available is None and (ready or 0) < (desired or 0):
        return Condition(WORKLOAD_READY, FALSE, REPLICAS_UNAVAILABLE, counts)
    return Condition(WORKLOAD_READY, TRUE, REPLICAS_READY, counts)


# -- ScalingReady -------------------------------------------------------------------------


def scaling_condition(
    scaler: Scaler | None, *, enabled: bool, fixed_replicas: int | None = None
) -> Condition:
    if not enabled:
        message = "KEDA scaling is off"
        if fixed_replicas is not None:
            message += f"; fixed at {fixed_replicas} replicas"
        return Condition(SCALING_READY, TRUE, SCALING_DISABLED, message)
    if scaler is None:
        return Condition(SCALING_READY, UNKNOWN, PENDING, "the ScaledObject does not exist yet")
    ready = scaler.ready
    if ready is None or ready.status == UNKNOWN:
        return Condition(
            SCALING_READY, UNKNOWN, WAITING_FOR_KEDA, "KEDA has not reported on the ScaledObject"
        )
    if ready.status == TRUE:
        return Condition(SCALING_READY, TRUE, SCALER_READY, "KEDA scales on the queue depth")
    message = ready.message or ready.reason or "KEDA reports it is not ready"
    return Condition(SCALING_READY, FALSE, SCALER_NOT_READY, message)


def keda_not_installed(error: str) -> Condition:
    return Condition(
        SCALING_READY,
        FALSE,
        KEDA_NOT_INSTALLED,
        f"cannot create the ScaledObject; is KEDA installed? ({error})",
    )


# -- the word -----------------------------------------------------------------------------


def _says(condition: models.Condition | None, value: str) -> bool:
    return condition is not None and condition.status == value


def word(
    conditions: Sequence[models.Condition],
    *,
    previous: str | None,
    scaling_enabled: bool,
    desired_replicas: int | None,
    queue_depth: int | None,
    terminating: bool = False,
) -> str:
    """The one-word status. `previous` tells a first rollout (Creating) from a relapse."""
    if terminating:
        return TERMINATING
    queue, workload, scaling = (find(conditions, kind) for kind in CONDITION_TYPES)
    if any(is_permanent(c) for c in (queue, workload, scaling)):
        return ERROR
    if _says(queue, FALSE) or _says(scaling, FALSE):
        return DEGRADED
    if workload is not None and workload.status == FALSE:
        first_rollout = previous in (None, CREATING, ERROR)
        if first_rollout and workload.reason == REPLICAS_UNAVAILABLE:
            return CREATING
        return DEGRADED
    if not _says(workload, TRUE) or not _says(queue, TRUE):
        # An update rolling out keeps a serving actor's word; anything else is (re)created.
        return previous if previous in (RUNNING, NAPPING) else CREATING
    if scaling_enabled and desired_replicas == 0 and not queue_depth:
        return NAPPING
    return RUNNING


# -- the whole status ---------------------------------------------------------------------


def next_status(
    old: models.AsyncActorStatus,
    conditions: Iterable[Condition],
    *,
    now: str,
    generation: int | None,
    scaling_enabled: bool,
    rollout: Rollout | None = None,
    queue: str | None = None,
    transport: str | None = None,
    queue_depth: int | None = None,
    terminating: bool = False,
) -> models.AsyncActorStatus:
    """The whole status to write: merged conditions, replicas, depth and the word.

    Fields not known now (no Deployment read, depth not measured) keep their old values."""
    merged = merge_conditions(old.conditions, conditions, now=now, generation=generation)
    if rollout is not None:
        ready, desired = rollout.ready, rollout.desired
    else:
        ready, desired = old.ready_replicas, old.desired_replicas
    depth = queue_depth if queue_depth is not None else old.queue_depth
    return models.AsyncActorStatus(
        status=word(
            merged,
            previous=old.status,
            scaling_enabled=scaling_enabled,
            desired_replicas=desired,
            queue_depth=depth,
            terminating=terminating,
        ),
        conditions=merged,
        ready_replicas=ready,
        desired_replicas=desired,
        queue_depth=depth,
        queue=queue if queue is not None else old.queue,
        transport=transport if transport is not None else old.transport,
        observed_generation=generation if generation is not None else old.observed_generation,
    )


def to_json(status: models.AsyncActorStatus) -> dict[str, Any]:
    """The status as written: every field, None included, so that the merge patch removes a
    value no longer known; a condition leaves out an observedGeneration it does not have."""
    written = status.model_dump(mode="json", by_alias=True)
    written["conditions"] = [
        c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in status.conditions
    ]
    return written


def changed(old: models.AsyncActorStatus, new: models.AsyncActorStatus) -> bool:
    """Whether writing `new` would change anything (to skip idle writes)."""
    return to_json(old) != to_json(new)
