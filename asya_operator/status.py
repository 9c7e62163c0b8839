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

Nothing here does I/O or reads the clock: callers pass `now`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
BROKER_UNAVAILABLE = "BrokerUnavailable"
QUEUE_ERROR = "QueueError"
INVALID_SPEC = "InvalidSpec"
UNKNOWN_TRANSPORT = "UnknownTransport"
RENDER_ERROR = "RenderError"
APPLY_ERROR = "ApplyError"
API_UNAVAILABLE = "ApiUnavailable"
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
DELETING = "Deleting"

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
    old: Sequence[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    *,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """The conditions list after `new`: lastTransitionTime stays while the status stays.

    Conditions not in `new` are kept as they were; the result is ordered by type as in
    CONDITION_TYPES, then any foreign types in their old order."""
    merged: dict[str, dict[str, Any]] = {}
    for item in old or ():
        if isinstance(item, Mapping) and item.get("type"):
            merged[str(item["type"])] = dict(item)
    for condition in new:
        previous = merged.get(condition.type)
        changed = previous is None or previous.get("status") != condition.status
        since = now if changed or previous is None else previous.get("lastTransitionTime", now)
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged[condition.type] = entry
    ordered = [merged.pop(kind) for kind in CONDITION_TYPES if kind in merged]
    return ordered + list(merged.values())


def find(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> Mapping[str, Any] | None:
    for item in conditions or ():
        if isinstance(item, Mapping) and item.get("type") == kind:
            return item
    return None


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


def blocked(reason: str, message: str, kinds: Iterable[str] = CONDITION_TYPES) -> list[Condition]:
    """The same False condition for every stage a problem stops the reconcile before."""
    return [Condition(kind, FALSE, reason, message) for kind in kinds]


def waiting_for_queue() -> list[Condition]:
    message = "the workload is applied once the queue exists"
    return [
        Condition(WORKLOAD_READY, UNKNOWN, WAITING_FOR_QUEUE, message),
        Condition(SCALING_READY, UNKNOWN, WAITING_FOR_QUEUE, message),
    ]


def unknown_transport(requested: str | None, configured: Iterable[str]) -> str:
    known = ", ".join(sorted(configured)) or "none"
    if requested:
        return f"transport {requested!r} is not configured in the operator; configured: {known}"
    return (
        "spec.transport is not set and the operator has no defaultTransport; "
        f"set spec.transport to one of: {known}"
    )


# -- WorkloadReady ------------------------------------------------------------------------


def replicas(deployment: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    """(ready, desired) replicas of a Deployment; None where it does not say yet."""
    if not deployment:
        return None, None
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = spec.get("replicas")
    if desired is None:
        # KEDA owns spec.replicas; until it writes one the API server's default (1) applies.
        desired = status.get("replicas")
    ready = status.get("readyReplicas", 0 if status else None)
    return (
        int(ready) if ready is not None else None,
        int(desired) if desired is not None else None,
    )


def workload_condition(deployment: Mapping[str, Any] | None) -> Condition:
    if not deployment:
        return Condition(WORKLOAD_READY, UNKNOWN, PENDING, "the Deployment does not exist yet")
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if not status or (generation is not None and (observed is None or observed < generation)):
        return Condition(WORKLOAD_READY, UNKNOWN, PENDING, "waiting for the Deployment controller")
    ready, desired = replicas(deployment)
    counts = f"{ready or 0}/{desired if desired is not None else '?'} replicas ready"
    progressing = find(status.get("conditions"), "Progressing")
    if progressing and progressing.get("status") == FALSE:
        detail = progressing.get("message") or "the rollout stopped making progress"
        return Condition(WORKLOAD_READY, FALSE, PROGRESS_DEADLINE_EXCEEDED, f"{detail} ({counts})")
    if desired == 0:
        return Condition(WORKLOAD_READY, TRUE, SCALED_TO_ZERO, "scaled to 0 replicas")
    available = find(status.get("conditions"), "Available")
    if available and available.get("status") == FALSE:
        detail = available.get("message") or "minimum replicas unavailable"
        return Condition(WORKLOAD_READY, FALSE, REPLICAS_UNAVAILABLE, f"{detail} ({counts})")
    if available is None and (ready or 0) < (desired or 0):
        return Condition(WORKLOAD_READY, FALSE, REPLICAS_UNAVAILABLE, counts)
    return Condition(WORKLOAD_READY, TRUE, REPLICAS_READY, counts)


# -- ScalingReady -------------------------------------------------------------------------


def scaling_condition(
    scaled_object: Mapping[str, Any] | None, *, enabled: bool, fixed_replicas: int | None = None
) -> Condition:
    if not enabled:
        message = "KEDA scaling is off"
        if fixed_replicas is not None:
            message += f"; fixed at {fixed_replicas} replicas"
        return Condition(SCALING_READY, TRUE, SCALING_DISABLED, message)
    if not scaled_object:
        return Condition(SCALING_READY, UNKNOWN, PENDING, "the ScaledObject does not exist yet")
    ready = find((scaled_object.get("status") or {}).get("conditions"), "Ready")
    if ready is None or ready.get("status") == UNKNOWN:
        return Condition(
            SCALING_READY, UNKNOWN, WAITING_FOR_KEDA, "KEDA has not reported on the ScaledObject"
        )
    if ready.get("status") == TRUE:
        return Condition(SCALING_READY, TRUE, SCALER_READY, "KEDA scales on the queue depth")
    message = ready.get("message") or ready.get("reason") or "KEDA reports it is not ready"
    return Condition(SCALING_READY, FALSE, SCALER_NOT_READY, str(message))


def keda_not_installed(error: str) -> Condition:
    return Condition(
        SCALING_READY,
        FALSE,
        KEDA_NOT_INSTALLED,
        f"cannot create the ScaledObject; is KEDA installed? ({error})",
    )


# -- the word -----------------------------------------------------------------------------


def word(
    conditions: Sequence[Mapping[str, Any]] | None,
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
    items = [find(conditions, kind) or {} for kind in CONDITION_TYPES]
    if any(c.get("status") == FALSE and c.get("reason") in PERMANENT_REASONS for c in items):
        return ERROR
    queue, workload, scaling = items
    if queue.get("status") == FALSE or scaling.get("status") == FALSE:
        return DEGRADED
    if workload.get("status") == FALSE:
        first_rollout = previous in (None, CREATING, ERROR)
        if first_rollout and workload.get("reason") == REPLICAS_UNAVAILABLE:
            return CREATING
        return DEGRADED
    if workload.get("status") != TRUE or queue.get("status") != TRUE:
        # An update rolling out keeps a serving actor's word; anything else is (re)created.
        return previous if previous in (RUNNING, NAPPING) else CREATING
    if scaling_enabled and desired_replicas == 0 and not queue_depth:
        return NAPPING
    return RUNNING


def status_patch(
    old_status: Mapping[str, Any] | None,
    conditions: Iterable[Condition],
    *,
    now: str,
    generation: int | None,
    scaling_enabled: bool,
    deployment: Mapping[str, Any] | None = None,
    queue: str | None = None,
    transport: str | None = None,
    queue_depth: int | None = None,
    terminating: bool = False,
) -> dict[str, Any]:
    """The whole status to write: merged conditions, replicas, depth and the word.

    Fields not known now (no Deployment read, depth not measured) keep their old values."""
    old = dict(old_status or {})
    merged = merge_conditions(old.get("conditions"), conditions, now=now, generation=generation)
    ready, desired = replicas(deployment) if deployment is not None else (None, None)
    if deployment is None:
        ready, desired = old.get("readyReplicas"), old.get("desiredReplicas")
    depth = queue_depth if queue_depth is not None else old.get("queueDepth")
    result: dict[str, Any] = {
        "conditions": merged,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "queueDepth": depth,
        "queue": queue if queue is not None else old.get("queue"),
        "transport": transport if transport is not None else old.get("transport"),
        "observedGeneration": generation
        if generation is not None
        else old.get("observedGeneration"),
    }
    result["status"] = word(
        merged,
        previous=old.get("status"),
        scaling_enabled=scaling_enabled,
        desired_replicas=desired,
        queue_depth=depth,
        terminating=terminating,
    )
    return result


def changed(old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]) -> bool:
    """Whether writing `new_status` would change anything (to skip idle writes)."""
    old = old_status or {}
    return any(old.get(key) != value for key, value in new_status.items())
