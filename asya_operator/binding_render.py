"""AsyaBinding -> the objects and the pod-template patch that bind a model server: pure.

A binding runs one built-in caller (asya_callers) next to the Asya sidecar. Both are rendered
by render.py exactly as for an AsyncActor whose handler is that caller (same image, runtime
ConfigMap, socket volume, hardening, sidecar env, KEDA trigger): `actor_for` builds that
AsyncActor, and this module only decides where the parts go.

    bridge   render.py's objects as they are, named <binding>-asya-bridge, the caller pointed
             at the workload's Service: ConfigMap, [TriggerAuthentication], Deployment,
             [ScaledObject]
    inject   render.py's ConfigMap, [TriggerAuthentication] and [ScaledObject] (retargeted at
             the workload), and the runtime and sidecar containers plus their volumes moved
             into the workload's pod template (`inject`). `Injection` records each name and
             annotation added, and `uninject` takes exactly those out again.

Nothing here reads the cluster or the clock; binding_decide.py chooses the mode.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asya_operator import binding_decide, kube, render
from asya_operator.binding_models import (
    BRIDGE_SUFFIX,
    AsyaBinding,
    Caller,
    Injection,
    Mode,
    Protocol,
)
from asya_operator.config import OperatorConfig
from asya_operator.models import RUNTIME_CONTAINER, SIDECAR_CONTAINER, AsyncActor, AsyncActorSpec

Obj = dict[str, Any]
RenderError = render.RenderError

BINDING_LABEL = "asya.sh/binding"
BOUND_BY_ANNOTATION = binding_decide.BOUND_BY_ANNOTATION
RUNTIME_DIGEST_ANNOTATION = "asya.sh/runtime-sha256"
LOCALHOST = "127.0.0.1"

HANDLERS = {
    Protocol.OPENAI_CHAT: "asya_callers.openai.Chat.handle",
    Protocol.OPENAI_COMPLETIONS: "asya_callers.openai.Completions.handle",
    Protocol.OPENAI_EMBEDDINGS: "asya_callers.openai.Embeddings.handle",
    Protocol.INFERENCE_V2: "asya_callers.inference_v2.Infer.handle",
    Protocol.HTTP: "asya_callers.http.Post.handle",
}
_PREFIX = {
    Protocol.OPENAI_CHAT: "ASYA_OPENAI_",
    Protocol.OPENAI_COMPLETIONS: "ASYA_OPENAI_",
    Protocol.OPENAI_EMBEDDINGS: "ASYA_OPENAI_",
    Protocol.INFERENCE_V2: "ASYA_V2_",
    Protocol.HTTP: "ASYA_HTTP_",
}
# The variable that says where the server is; set by the operator, never by spec.env.
_URL_VARIABLE = {
    Protocol.OPENAI_CHAT: "ASYA_OPENAI_BASE_URL",
    Protocol.OPENAI_COMPLETIONS: "ASYA_OPENAI_BASE_URL",
    Protocol.OPENAI_EMBEDDINGS: "ASYA_OPENAI_BASE_URL",
    Protocol.INFERENCE_V2: "ASYA_V2_BASE_URL",
    Protocol.HTTP: "ASYA_HTTP_URL",
}
# caller field -> variable suffix, and the protocols it applies to (the CRD says the same in
# CEL; this is for `asya render` and for objects stored before a rule existed).
_OPENAI = {Protocol.OPENAI_CHAT, Protocol.OPENAI_COMPLETIONS, Protocol.OPENAI_EMBEDDINGS}
_GENERATION = {Protocol.OPENAI_CHAT, Protocol.OPENAI_COMPLETIONS}
_ALL = set(Protocol)
_SETTINGS: dict[str, tuple[str, str, set[Protocol]]] = {
    # python name: (manifest name, suffix, protocols)
    "model": ("model", "MODEL", _OPENAI | {Protocol.INFERENCE_V2}),
    "version": ("version", "VERSION", {Protocol.INFERENCE_V2}),
    "inputs": ("inputs", "INPUTS", {Protocol.INFERENCE_V2}),
    "outputs": ("outputs", "OUTPUTS", {Protocol.INFERENCE_V2}),
    "ready_timeout": ("readyTimeout", "READY_TIMEOUT", {Protocol.INFERENCE_V2}),
    "prompt_template": ("promptTemplate", "PROMPT_TEMPLATE", _OPENAI),
    "system_prompt": ("systemPrompt", "SYSTEM_PROMPT", {Protocol.OPENAI_CHAT}),
    "max_tokens": ("maxTokens", "MAX_TOKENS", _GENERATION),
    "temperature": ("temperature", "TEMPERATURE", _GENERATION),
    "stream": ("stream", "STREAM", _GENERATION),
    "body_field": ("bodyField", "BODY_FIELD", {Protocol.HTTP}),
    "headers": ("headers", "HEADERS", {Protocol.HTTP}),
    "output_field": ("outputField", "OUTPUT_FIELD", _ALL),
    "timeout": ("timeout", "TIMEOUT", _ALL),
}


def handler(caller: Caller) -> str:
    return HANDLERS[caller.protocol]


def bridge_name(binding: AsyaBinding) -> str:
    return f"{binding.name}{BRIDGE_SUFFIX}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def server_url(caller: Caller, base: str) -> str:
    """What the caller's URL variable gets: the base, plus caller.path for http."""
    base = base.rstrip("/")
    if caller.protocol == Protocol.HTTP and caller.path:
        return base + caller.path
    return base


def caller_env(binding: AsyaBinding, base_url: str) -> list[Obj]:
    """The caller's variables from spec.caller, then spec.env (which may not set the URL)."""
    caller = binding.spec.caller
    protocol = caller.protocol
    url_variable = _URL_VARIABLE[protocol]
    variables = [{"name": url_variable, "value": server_url(caller, base_url)}]
    for attribute, (manifest, suffix, protocols) in _SETTINGS.items():
        value = getattr(caller, attribute)
        if value is None:
            continue
        if protocol not in protocols:
            raise RenderError(
                f"spec.caller.{manifest} does not apply to protocol {protocol.value}; "
                "remove it (or set the caller's own variable in spec.env)"
            )
        variables.append({"name": f"{_PREFIX[protocol]}{suffix}", "value": _text(value)})
    if caller.path is not None and protocol != Protocol.HTTP:
        raise RenderError("spec.caller.path applies only to protocol http")
    if protocol == Protocol.INFERENCE_V2 and caller.model is None:
        raise RenderError("protocol inference-v2 needs spec.caller.model (ASYA_V2_MODEL)")
    for item in binding.spec.env:
        if isinstance(item, dict) and item.get("name") == url_variable:
            raise RenderError(
                f"spec.env: {url_variable} is set by the operator (the server in the pod on "
                "caller.port, or the bridge's Service); set spec.endpoint instead"
            )
    return [*variables, *binding.spec.env]


def actor_for(binding: AsyaBinding, *, name: str, base_url: str, grace_period: int) -> AsyncActor:
    """The AsyncActor whose pod render.py would build for this binding: the caller as its
    handler, in the Asya image (built-in handlers need no image of their own)."""
    spec = binding.spec
    actor_spec = AsyncActorSpec(
        actor=binding.actor,
        transport=spec.transport.name,
        handler=handler(spec.caller),
        env=caller_env(binding, base_url),
        concurrency=spec.concurrency,
        scaling=spec.scaling,
        resiliency=spec.resiliency,
        # render.py's model allows 10 s at least; a pod's own 30 s default is more anyway.
        termination_grace_period_seconds=max(10, grace_period),
    )
    return AsyncActor(
        name=name, namespace=binding.namespace, uid=binding.uid, generation=None, spec=actor_spec
    )


def _label(objects: list[Obj], binding: AsyaBinding) -> list[Obj]:
    for obj in objects:
        obj["metadata"].setdefault("labels", {})[BINDING_LABEL] = binding.name
    return objects


def plan(binding: AsyaBinding, config: OperatorConfig) -> render.Plan:
    """The binding's transport and queue (raises render.UnknownTransport, RenderError)."""
    probe = actor_for(binding, name=binding.name, base_url="http://probe", grace_period=60)
    return render.plan(probe, config)


# ---------------------------------------------------------------------------------- bridge


def bridge(
    binding: AsyaBinding,
    endpoint: str,
    *,
    config: OperatorConfig,
    plan: render.Plan,
    runtime_source: str,
) -> list[Obj]:
    """ConfigMap, [TriggerAuthentication], the bridge Deployment, [its ScaledObject]."""
    actor = actor_for(
        binding,
        name=bridge_name(binding),
        base_url=endpoint,
        grace_period=AsyncActorSpec.model_fields["termination_grace_period_seconds"].default,
    )
    return _label(render.build(actor, plan, config=config, runtime_source=runtime_source), binding)


# ---------------------------------------------------------------------------------- inject


@dataclass(frozen=True)
class Injected:
    """What inject mode applies: objects of its own, and the workload's new pod template."""

    objects: list[Obj]  # ConfigMap, [TriggerAuthentication], [ScaledObject on the workload]
    template: Obj  # the workload's spec.template with the parts in
    injection: Injection  # what was added, for uninject


def _pod_user(container: Obj) -> Obj:
    # An injected pod keeps the workload's pod securityContext (the model server's image may
    # need its own user), so our containers pin the non-root user themselves.
    security = dict(container.get("securityContext") or {})
    security.setdefault("runAsUser", render.NONROOT_ID)
    security.setdefault("runAsGroup", render.NONROOT_ID)
    return {**container, "securityContext": security}


def _names(items: Any) -> list[str]:
    return [str(i.get("name")) for i in items or [] if isinstance(i, dict)]


def inject(
    binding: AsyaBinding,
    template: Mapping[str, Any],
    *,
    grace_period: int,
    workload_name: str,
    config: OperatorConfig,
    plan: render.Plan,
    runtime_source: str,
    replicas: int | None = None,
) -> Injected:
    """The parts of render.py's actor pod, added to `template` (a template without them:
    pass it through `uninject` first when it may hold an older injection). `replicas` is
    the workload's own count, recorded to give back when KEDA stops scaling it."""
    actor = actor_for(
        binding,
        name=binding.name,
        base_url=f"http://{LOCALHOST}:{binding.spec.caller.port}",
        grace_period=grace_period,
    )
    rendered = render.build(actor, plan, config=config, runtime_source=runtime_source)
    (deployment,) = [o for o in rendered if o["kind"] == "Deployment"]
    objects = [o for o in rendered if o["kind"] != "Deployment"]
    for obj in objects:
        if obj["kind"] == "ScaledObject":
            obj["spec"]["scaleTargetRef"] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": workload_name,
            }
    pod = deployment["spec"]["template"]["spec"]
    (runtime,) = [c for c in pod["initContainers"] if c["name"] == RUNTIME_CONTAINER]
    (sidecar,) = [c for c in pod["containers"] if c["name"] == SIDECAR_CONTAINER]
    volumes = list(pod["volumes"])
    digest = deployment["spec"]["template"]["metadata"]["annotations"][RUNTIME_DIGEST_ANNOTATION]

    result = copy.deepcopy(dict(template))
    spec = result.setdefault("spec", {})
    where = f"Deployment {workload_name}: spec.template.spec"
    for key, ours in (("initContainers", runtime), ("containers", sidecar)):
        if ours["name"] in _names(spec.get(key)) + _names(spec.get("initContainers")):
            raise RenderError(
                f"{where}.{key} already has a container named {ours['name']!r} that no binding "
                "recorded adding; rename it, or remove the other Asya injection first"
            )
    taken = set(_names(spec.get("volumes"))) & set(_names(volumes))
    if taken:
        raise RenderError(
            f"{where}.volumes already has {sorted(taken)}: those names are reserved for Asya"
        )
    spec["initContainers"] = [*(spec.get("initContainers") or []), _pod_user(runtime)]
    # Last, so the model server stays the pod's first container (kubectl's default one).
    spec["containers"] = [*(spec.get("containers") or []), _pod_user(sidecar)]
    spec["volumes"] = [*(spec.get("volumes") or []), *volumes]
    metadata = result.setdefault("metadata", {})
    annotations = dict(metadata.get("annotations") or {})
    replaced = {}
    if RUNTIME_DIGEST_ANNOTATION in annotations:
        replaced[RUNTIME_DIGEST_ANNOTATION] = annotations[RUNTIME_DIGEST_ANNOTATION]
    # A new runtime file changes the template, so the pods roll and pick it up.
    annotations[RUNTIME_DIGEST_ANNOTATION] = digest
    metadata["annotations"] = annotations
    injection = Injection(
        init_containers=[runtime["name"]],
        containers=[sidecar["name"]],
        volumes=_names(volumes),
        annotations=[] if replaced else [RUNTIME_DIGEST_ANNOTATION],
        replaced_annotations=replaced,
        replicas=replicas if binding.spec.scaling.enabled else None,
    )
    return Injected(_label(objects, binding), result, injection)


# What an injection holds, by name, for a workload annotated as bound by a binding whose
# status lost its record (a status write that failed after the patch went through).
ASSUMED = Injection(
    init_containers=[RUNTIME_CONTAINER],
    containers=[SIDECAR_CONTAINER],
    volumes=list(render.RESERVED_VOLUMES),
    annotations=[RUNTIME_DIGEST_ANNOTATION],
)


def current_injection(
    recorded: Injection | None, recorded_uid: str | None, target: binding_decide.Workload, name: str
) -> Injection | None:
    """What binding `name` injected into `target` as it is now: the status's record when it
    is about this very object (same uid), else ASSUMED when the workload says we bound it."""
    if recorded is not None and recorded_uid == target.uid:
        return recorded
    if target.bound_by == name:
        return ASSUMED
    return None


def uninject(template: Mapping[str, Any], injection: Injection) -> Obj:
    """`template` without what `injection` says was added: the user's template as it was
    (lists left empty are dropped, as the API server never stores an empty one)."""
    result = copy.deepcopy(dict(template))
    spec = result.get("spec")
    if isinstance(spec, dict):
        for key, added in (
            ("initContainers", injection.init_containers),
            ("containers", injection.containers),
            ("volumes", injection.volumes),
        ):
            if key not in spec:
                continue
            kept = [
                i for i in spec[key] or [] if not (isinstance(i, dict) and i.get("name") in added)
            ]
            if kept or key == "containers":
                spec[key] = kept
            else:
                del spec[key]
    metadata = result.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("annotations"), dict):
        annotations = dict(metadata["annotations"])
        for key in injection.annotations:
            annotations.pop(key, None)
        annotations.update(injection.replaced_annotations)
        if annotations:
            metadata["annotations"] = annotations
        else:
            del metadata["annotations"]
    return result


_TEMPLATE_LISTS = ("initContainers", "containers", "volumes")


def template_patch(live: Mapping[str, Any], desired: Mapping[str, Any]) -> Obj | None:
    """The merge patch of a Deployment that turns its pod template `live` into `desired`,
    touching only the keys an injection changes; None when nothing would change.

    Whole lists (a merge patch cannot address list items); annotations key by key."""
    live_spec = dict(live.get("spec") or {})
    desired_spec = dict(desired.get("spec") or {})
    spec_patch: Obj = {}
    for key in _TEMPLATE_LISTS:
        if key not in desired_spec:
            if key in live_spec:
                spec_patch[key] = None
        elif not kube.contains(live_spec.get(key), desired_spec[key]):
            spec_patch[key] = desired_spec[key]
    live_notes = dict((live.get("metadata") or {}).get("annotations") or {})
    desired_notes = dict((desired.get("metadata") or {}).get("annotations") or {})
    notes: Obj | None
    if live_notes and not desired_notes:
        notes = None  # the whole map: a merge patch that empties it would leave {}
    else:
        notes = {k: v for k, v in desired_notes.items() if live_notes.get(k) != v}
        notes.update({k: None for k in live_notes if k not in desired_notes})
    template: Obj = {}
    if spec_patch:
        template["spec"] = spec_patch
    if notes is None or notes:
        template["metadata"] = {"annotations": notes}
    if not template:
        return None
    return {"spec": {"template": template}}


# ---------------------------------------------------------------------------- asya render


_SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


def _refused(refusal: binding_decide.Refusal) -> RenderError:
    return RenderError(f"{refusal.message} ({refusal.reason})")


def offline(
    binding: AsyaBinding,
    *,
    workload: Mapping[str, Any] | None,
    services: Sequence[Mapping[str, Any]] = (),
    autoscalers: Sequence[Mapping[str, Any]] = (),
    scaled_objects: Sequence[Mapping[str, Any]] = (),
    config: OperatorConfig,
    runtime_source: str | None = None,
) -> list[Obj]:
    """What the operator would apply for `binding`, decided from objects given rather than
    read (`asya render --workload`): the same checks, in the operator's order, raising
    RenderError for a refusal. Inject mode yields the whole workload with its new pod
    template, for `kubectl diff`; bridge mode its own objects."""
    source = render.bundled_runtime_source() if runtime_source is None else runtime_source
    refusal = binding_decide.other_namespace(binding)
    if refusal is not None:
        raise _refused(refusal)
    chosen_plan = plan(binding, config)
    spec = binding.spec
    if workload is None:
        if spec.endpoint is not None and spec.mode != Mode.INJECT:
            return bridge(
                binding, spec.endpoint, config=config, plan=chosen_plan, runtime_source=source
            )
        raise RenderError(
            f"the workload {spec.workload_ref.kind} {spec.workload_ref.name} decides the mode "
            "and is what inject mode patches: pass its manifest with --workload FILE (or set "
            "spec.endpoint and mode bridge)"
        )
    target = binding_decide.workload(workload)
    mode = binding_decide.choose_mode(binding, target)
    if isinstance(mode, binding_decide.Refusal):
        raise _refused(mode)
    if mode == Mode.BRIDGE:
        endpoint = binding_decide.endpoint(binding, target, services)
        if isinstance(endpoint, binding_decide.Refusal):
            raise _refused(endpoint)
        return bridge(binding, endpoint, config=config, plan=chosen_plan, runtime_source=source)
    if spec.scaling.enabled:
        refusal = binding_decide.scaling_conflict(
            binding, target, autoscalers=autoscalers, scaled_objects=scaled_objects
        )
        if refusal is not None:
            raise _refused(refusal)
    injected = inject(
        binding,
        target.template or {},
        grace_period=target.grace_period,
        workload_name=target.name,
        config=config,
        plan=chosen_plan,
        runtime_source=source,
    )
    patched = copy.deepcopy(dict(workload))
    patched.pop("status", None)
    metadata = patched.setdefault("metadata", {})
    # What the API server writes itself: a manifest for `kubectl diff` or apply leaves it out
    # (a stale resourceVersion would make the apply fail).
    for key in _SERVER_FIELDS:
        metadata.pop(key, None)
    metadata["namespace"] = binding.namespace
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        BOUND_BY_ANNOTATION: binding.name,
    }
    patched.setdefault("spec", {})["template"] = injected.template
    before = [o for o in injected.objects if o["kind"] != "ScaledObject"]
    after = [o for o in injected.objects if o["kind"] == "ScaledObject"]
    return [*before, patched, *after]
