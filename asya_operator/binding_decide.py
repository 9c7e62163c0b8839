"""What to do with an AsyaBinding, decided from what the operator read: pure, no I/O.

    workload(obj)            the bound object, parsed: its controlling owner, its pods' labels,
                             and (a Deployment) its pod template
    choose_mode(...)         inject or bridge, or a Refusal (inject asked for a workload that
                             cannot be patched, or that another controller would revert)
    scaling_conflict(...)    a Refusal when an HPA or another ScaledObject already scales the
                             workload that inject mode would put a ScaledObject on
    other_claim(...)         a Refusal when an older binding already targets the workload
    endpoint(...)            the URL a bridge calls: spec.endpoint, else the Service that
                             selects the workload's pods on caller.port

A Refusal carries the condition reason, a message that says what to do, and whether the
operator should keep retrying without a change (a workload that may still appear).
binding_handlers.py reads the objects, calls these, and carries the answer out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asya_operator.binding_models import AsyaBinding, Mode

# Refusal reasons (the Ready condition's reason, and the Event's).
WORKLOAD_NOT_FOUND = "WorkloadNotFound"
WORKLOAD_IN_OTHER_NAMESPACE = "WorkloadInOtherNamespace"
CANNOT_INJECT = "CannotInject"
SCALED_BY_OTHERS = "ScaledByOthers"
ALREADY_BOUND = "WorkloadAlreadyBound"
NO_SERVICE = "ServiceNotFound"
AMBIGUOUS_SERVICE = "AmbiguousService"

DEPLOYMENT_API = "apps/v1"
# On the bound Deployment's metadata (not its pod template: no rollout): who injected it.
BOUND_BY_ANNOTATION = "asya.sh/bound-by"
DEFAULT_GRACE_PERIOD = 30  # Kubernetes' own default terminationGracePeriodSeconds


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str
    retry: bool = False  # True: may resolve by itself (the workload is created later)


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str


@dataclass(frozen=True)
class Workload:
    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str
    controller: Owner | None  # the ownerReference with controller: true
    pod_labels: dict[str, str] = field(default_factory=dict)
    template: dict[str, Any] | None = None  # a Deployment's spec.template, as stored
    grace_period: int = DEFAULT_GRACE_PERIOD
    replicas: int | None = None  # spec.replicas as stored (None: absent, the default 1)
    bound_by: str | None = None  # the binding its asya.sh/bound-by annotation names

    @property
    def is_deployment(self) -> bool:
        return self.api_version == DEPLOYMENT_API and self.kind == "Deployment"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def workload(obj: Mapping[str, Any]) -> Workload:
    """The fields of a workload object that the decisions need; absent ones are defaults."""
    metadata = _dict(obj.get("metadata"))
    controller = None
    for ref in metadata.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            controller = Owner(str(ref.get("kind", "")), str(ref.get("name", "")))
    spec = _dict(obj.get("spec"))
    template = spec.get("template") if isinstance(spec.get("template"), dict) else None
    labels = _dict(_dict((template or {}).get("metadata")).get("labels"))
    grace = _dict((template or {}).get("spec")).get("terminationGracePeriodSeconds")
    return Workload(
        api_version=str(obj.get("apiVersion", "")),
        kind=str(obj.get("kind", "")),
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        uid=str(metadata.get("uid", "")),
        controller=controller,
        pod_labels={str(k): str(v) for k, v in labels.items()},
        template=template,
        grace_period=grace if isinstance(grace, int) else DEFAULT_GRACE_PERIOD,
        replicas=spec["replicas"] if isinstance(spec.get("replicas"), int) else None,
        bound_by=_dict(metadata.get("annotations")).get(BOUND_BY_ANNOTATION),
    )


def other_namespace(binding: AsyaBinding) -> Refusal | None:
    asked = binding.spec.workload_ref.namespace
    if asked is None or asked == binding.namespace:
        return None
    return Refusal(
        WORKLOAD_IN_OTHER_NAMESPACE,
        f"spec.workloadRef.namespace {asked!r} is not the binding's namespace "
        f"{binding.namespace!r}: a binding only reaches workloads in its own namespace; "
        f"create the AsyaBinding in {asked!r} instead",
    )


def missing(binding: AsyaBinding) -> Refusal:
    ref = binding.spec.workload_ref
    return Refusal(
        WORKLOAD_NOT_FOUND,
        f"{ref.kind} {binding.namespace}/{ref.name} ({ref.api_version}) does not exist (yet); "
        "the operator keeps checking and binds it when it appears. Check "
        "spec.workloadRef if it should exist already",
        retry=True,
    )


def choose_mode(binding: AsyaBinding, target: Workload) -> Mode | Refusal:
    """auto: inject into a Deployment that no controller owns, bridge anything else."""
    asked = binding.spec.mode
    if asked == Mode.BRIDGE:
        return Mode.BRIDGE
    if not target.is_deployment:
        if asked == Mode.INJECT:
            return Refusal(
                CANNOT_INJECT,
                f"mode inject patches an apps/v1 Deployment's pod template, and the workload "
                f"is a {target.kind} ({target.api_version}): use mode bridge (or auto)",
            )
        return Mode.BRIDGE
    if target.controller is not None:
        if asked == Mode.INJECT:
            owner = target.controller
            return Refusal(
                CANNOT_INJECT,
                f"Deployment {target.name} is controlled by {owner.kind} {owner.name}, which "
                "would revert a patch of its pod template: use mode bridge (or auto), or "
                "bind a Deployment you manage yourself",
            )
        return Mode.BRIDGE
    if binding.spec.endpoint is not None:
        # The CRD refuses endpoint with mode inject; under auto it asks for a bridge.
        return Mode.BRIDGE
    return Mode.INJECT


def _targets(ref: Any, target: Workload) -> bool:
    ref = _dict(ref)
    api = str(ref.get("apiVersion") or DEPLOYMENT_API)
    return (
        ref.get("name") == target.name
        and ref.get("kind") == target.kind
        and api.split("/")[0] == target.api_version.split("/")[0]
    )


def _name(obj: Mapping[str, Any]) -> str:
    return str(_dict(obj.get("metadata")).get("name", ""))


def _owned_by_scaled_object(obj: Mapping[str, Any], name: str) -> bool:
    refs = _dict(obj.get("metadata")).get("ownerReferences") or []
    return any(
        isinstance(r, dict) and r.get("kind") == "ScaledObject" and r.get("name") == name
        for r in refs
    )


def scaling_conflict(
    binding: AsyaBinding,
    target: Workload,
    *,
    autoscalers: Sequence[Mapping[str, Any]],
    scaled_objects: Sequence[Mapping[str, Any]],
) -> Refusal | None:
    """Inject mode with scaling on puts a ScaledObject on the workload itself; KEDA and an
    HPA that already scales it would fight over its replicas."""
    ours = binding.name
    hpas = [
        _name(h)
        for h in autoscalers
        if _targets(_dict(h.get("spec")).get("scaleTargetRef"), target)
        # KEDA runs our own ScaledObject through an HPA it names keda-hpa-<name>.
        and not _owned_by_scaled_object(h, ours)
        and _name(h) != f"keda-hpa-{ours}"
    ]
    others = [
        _name(s)
        for s in scaled_objects
        if _targets(_dict(s.get("spec")).get("scaleTargetRef"), target) and _name(s) != ours
    ]
    if not hpas and not others:
        return None
    found = [f"HorizontalPodAutoscaler {n}" for n in sorted(hpas)]
    found += [f"ScaledObject {n}" for n in sorted(others)]
    return Refusal(
        SCALED_BY_OTHERS,
        f"Deployment {target.name} is already scaled by {', '.join(found)}; KEDA and that "
        "autoscaler would fight over its replicas. Delete it, or set spec.scaling.enabled: "
        "false (the binding then leaves replicas alone), or use mode bridge (the binding "
        "scales a bridge Deployment of its own)",
    )


def _created(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = _dict(obj.get("metadata"))
    return (str(metadata.get("creationTimestamp") or "~"), str(metadata.get("name", "")))


def other_claim(binding: AsyaBinding, bindings: Sequence[Mapping[str, Any]]) -> Refusal | None:
    """The oldest binding of a workload keeps it (then the first by name); the rest are
    refused, so two sidecars never consume into one server and two ScaledObjects never
    scale one Deployment."""
    ref = binding.spec.workload_ref
    mine = next((b for b in bindings if _name(b) == binding.name), None)
    rivals = []
    for other in bindings:
        if _name(other) == binding.name:
            continue
        other_ref = _dict(_dict(other.get("spec")).get("workloadRef"))
        same = (
            other_ref.get("name") == ref.name
            and other_ref.get("kind") == ref.kind
            and str(other_ref.get("apiVersion") or DEPLOYMENT_API) == ref.api_version
        )
        if same and (mine is None or _created(other) < _created(mine)):
            rivals.append(_name(other))
    if not rivals:
        return None
    return Refusal(
        ALREADY_BOUND,
        f"{ref.kind} {ref.name} is already bound by AsyaBinding {sorted(rivals)[0]}; one "
        "workload takes one binding. Delete one of them, or send this actor's messages to "
        "the other binding's actor",
    )


@dataclass(frozen=True)
class _Candidate:
    name: str
    port: int
    specificity: int


def _port_of(service: Mapping[str, Any], wanted: int) -> int | None:
    """The Service port that reaches the pods' `wanted` port (targetPort, else port)."""
    ports = [p for p in _dict(service.get("spec")).get("ports") or [] if isinstance(p, dict)]
    for port in ports:
        if port.get("targetPort") == wanted:
            return int(port["port"])
    for port in ports:
        if port.get("port") == wanted and port.get("targetPort") in (None, wanted):
            return wanted
    return None


def endpoint(
    binding: AsyaBinding, target: Workload, services: Sequence[Mapping[str, Any]]
) -> str | Refusal:
    """spec.endpoint, else http://<service>.<namespace>.svc:<port> of the Service whose
    selector matches the workload's pod labels (a Deployment) or that the workload owns
    (another controller's resource), on caller.port. The most specific selector wins: KubeRay
    and KServe put a narrower Service for serving beside a broader one."""
    if binding.spec.endpoint is not None:
        return binding.spec.endpoint.rstrip("/")
    wanted = binding.spec.caller.port
    candidates = []
    for service in services:
        spec = _dict(service.get("spec"))
        selector = {str(k): str(v) for k, v in _dict(spec.get("selector")).items()}
        refs = _dict(service.get("metadata")).get("ownerReferences") or []
        owned = any(isinstance(r, dict) and r.get("uid") == target.uid for r in refs)
        selects = bool(selector) and all(target.pod_labels.get(k) == v for k, v in selector.items())
        if not (selects or (owned and target.uid)):
            continue
        port = _port_of(service, wanted)
        if port is not None:
            candidates.append(_Candidate(_name(service), port, len(selector)))
    where = f"{target.kind} {target.name}"
    if not candidates:
        return Refusal(
            NO_SERVICE,
            f"no Service in {binding.namespace} selects the pods of {where} on port {wanted} "
            "(spec.caller.port): create one, fix caller.port, or set spec.endpoint to the "
            "server's URL",
            retry=True,
        )
    best = max(c.specificity for c in candidates)
    top = sorted((c for c in candidates if c.specificity == best), key=lambda c: c.name)
    if len(top) > 1:
        return Refusal(
            AMBIGUOUS_SERVICE,
            f"Services {', '.join(c.name for c in top)} all select the pods of {where} on "
            f"port {wanted}: set spec.endpoint to the one to call",
        )
    chosen = top[0]
    return f"http://{chosen.name}.{binding.namespace}.svc:{chosen.port}"
