"""What an AsyaBinding's status says: pure functions from one reconcile's findings to fields.

Conditions (True, False or Unknown, each with a CamelCase reason):

    Ready        the binding is in place: the caller consumes the queue and calls the server
    Injected     inject mode: the sidecar and the caller are in the workload's pod template
    BridgeReady  bridge mode: the <name>-asya-bridge Deployment has rolled out
    Scaling      a ScaledObject scales the workload (inject) or the bridge (bridge) on the
                 queue depth, or why not

and a phase for `kubectl get asyab`: Pending (waiting for the workload, or a Service), Bound,
Refused (a conflict only a change fixes: an HPA, a second binding, a transport the operator
lacks), Error (an invalid spec or an object the API server refused), Terminating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asya_operator import status
from asya_operator.binding_decide import Refusal
from asya_operator.binding_models import AsyaBindingStatus, Injection, Target
from asya_operator.observed import Rollout

Condition = status.Condition
TRUE, FALSE, UNKNOWN = status.TRUE, status.FALSE, status.UNKNOWN

READY = "Ready"
INJECTED = "Injected"
BRIDGE_READY = "BridgeReady"
SCALING = "Scaling"

PENDING = "Pending"
BOUND = "Bound"
REFUSED = "Refused"
ERROR = "Error"
TERMINATING = "Terminating"

# Reasons of the binding's own.
INVALID_SPEC = status.INVALID_SPEC
TRANSPORT_NOT_CONFIGURED = "TransportNotConfigured"
RENDER_ERROR = status.RENDER_ERROR
APPLY_ERROR = status.APPLY_ERROR
QUEUE_ERROR = status.QUEUE_ERROR
BROKER_UNAVAILABLE = status.BROKER_UNAVAILABLE
KEDA_NOT_INSTALLED = status.KEDA_NOT_INSTALLED
# A refusal that may resolve without any change (the workload is created later).
_WAITING = {"WorkloadNotFound", "ServiceNotFound", BROKER_UNAVAILABLE}
_ERRORS = {INVALID_SPEC, RENDER_ERROR, APPLY_ERROR}


@dataclass(frozen=True)
class Report:
    """What one reconcile learnt. None leaves the stored value as it was (a refusal does not
    forget the mode, target or injection of the last success)."""

    conditions: list[Condition]
    mode: str | None = None
    queue: str | None = None
    transport: str | None = None
    target: Target | None = None
    endpoint: str | None = None
    replicas: str | None = None
    injected: Injection | None = None
    forget_injection: bool = False  # the injection was taken out (bridge now, or deleted)
    terminating: bool = False


def refused(refusal: Refusal) -> list[Condition]:
    return [Condition(READY, FALSE, refusal.reason, refusal.message)]


def failed(reason: str, message: str) -> list[Condition]:
    return [Condition(READY, FALSE, reason, message)]


def injected(*, restored: bool) -> Condition:
    if restored:
        return Condition(
            INJECTED,
            TRUE,
            "InjectionRestored",
            "the pod template had lost the sidecar or the caller (a re-applied manifest?); "
            "the operator put them back",
        )
    return Condition(INJECTED, TRUE, "Injected", "sidecar and caller are in the pod template")


def bridge_ready(rollout: Rollout | None, name: str) -> Condition:
    workload = status.workload_condition(rollout)
    return Condition(BRIDGE_READY, workload.status, workload.reason, f"{name}: {workload.message}")


def scaling(*, enabled: bool, target: str, owner: str | None) -> Condition:
    if not enabled:
        who = f"by its owner ({owner})" if owner else "as the workload says"
        return Condition(
            SCALING,
            FALSE,
            status.SCALING_DISABLED,
            f"spec.scaling.enabled is false: no ScaledObject; the model server is scaled {who}",
        )
    return Condition(SCALING, TRUE, "ScaledObjectApplied", f"KEDA scales {target} on the queue")


def ready(mode: str, endpoint: str) -> Condition:
    return Condition(READY, TRUE, BOUND, f"{mode}: the caller calls {endpoint}")


def phase(conditions: list[Condition], *, terminating: bool) -> str:
    if terminating:
        return TERMINATING
    found = next((c for c in conditions if c.type == READY), None)
    if found is None or found.status == TRUE:
        return BOUND
    if found.reason in _WAITING:
        return PENDING
    if found.reason in _ERRORS:
        return ERROR
    return REFUSED


def next_status(
    old: AsyaBindingStatus, report: Report, *, now: str, generation: int | None
) -> AsyaBindingStatus:
    conditions = status.merge_conditions(
        old.conditions, report.conditions, now=now, generation=generation
    )
    if report.mode == "bridge":
        conditions = [c for c in conditions if c.type != INJECTED]
    elif report.mode == "inject":
        conditions = [c for c in conditions if c.type != BRIDGE_READY]
    stored = [Condition(c.type, c.status, c.reason, c.message) for c in conditions]
    injected_now = report.injected
    if injected_now is None and not report.forget_injection:
        injected_now = old.injected
    return AsyaBindingStatus(
        phase=phase(stored, terminating=report.terminating),
        mode=report.mode or old.mode,
        queue=report.queue or old.queue,
        transport=report.transport or old.transport,
        target=report.target or old.target,
        endpoint=report.endpoint or old.endpoint,
        replicas=report.replicas or old.replicas,
        injected=injected_now,
        conditions=conditions,
        observed_generation=generation,
    )


def stored(raw: Any) -> AsyaBindingStatus:
    """The status as stored; anything unreadable counts as empty (the operator rewrites it)."""
    try:
        return AsyaBindingStatus.model_validate(raw or {})
    except ValueError:
        return AsyaBindingStatus()


def to_json(value: AsyaBindingStatus) -> dict[str, Any]:
    """Every field, None included, so that the merge patch removes what is no longer known."""
    written = value.model_dump(mode="json", by_alias=True)
    written["conditions"] = [
        c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in value.conditions
    ]
    return written
