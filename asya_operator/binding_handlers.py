"""kopf handlers of AsyaBinding: read, decide (binding_decide), render (binding_render),
apply, write the status (binding_status).

Lifecycle of one AsyaBinding:

    create / update / resume   reconcile: spec -> transport -> workload -> other bindings
                               -> mode -> autoscalers (inject) -> queue -> apply -> status
    resync daemon              the same every `resync_seconds`: a workload that appears is
                               bound, an injection wiped by a re-applied manifest is put back
    delete (finalizer)         inject: take out exactly what the status records was added;
                               bridge: its objects go by garbage collection (ownerReferences);
                               the queue goes if it is empty (as an AsyncActor's by default)

A refusal (binding_decide.Refusal) sets Ready=False with a reason and a message that says
what to do, and posts a Warning Event the first time it is seen; the resync keeps checking,
so removing the cause (the HPA, the other binding) binds the workload without a new apply.

The State (client, configuration, locks) is handlers.State, shared with AsyncActor.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import kopf
import pydantic

from asya_operator import (
    binding_decide,
    binding_render,
    binding_status,
    deletion,
    kube,
    models,
    observed,
    render,
    status,
)
from asya_operator.binding_decide import Refusal
from asya_operator.binding_models import (
    GROUP,
    PLURAL,
    VERSION,
    AsyaBinding,
    AsyaBindingStatus,
    Injection,
    Mode,
    Target,
)
from asya_operator.handlers import State, backoff, delete_owned, describe, state_of
from asya_operator.pause import pause
from asya_operator.queues import BrokerUnavailable, QueueAdminError, QueueGone

ASYABINDINGS = kube.Resource(GROUP, VERSION, PLURAL, "AsyaBinding")
SERVICES = kube.Resource("", "v1", "services", "Service")
HPAS = kube.Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
DELETE_TIMEOUT_S = 600.0
WAIT_S = 10.0  # a workload or Service that does not exist yet: look again this often

Report = binding_status.Report


def workload_resource(api_version: str, kind: str) -> kube.Resource:
    """The API path of a workload kind; plurals of the kinds bound in practice (Deployment,
    InferenceService, RayService, Workspace) are the lower-case kind plus s."""
    group, _, version = api_version.rpartition("/")
    return kube.Resource(group, version, f"{kind.lower()}s", kind)


def _now() -> str:
    return status.timestamp(datetime.datetime.now(datetime.UTC))


def _key(body: kopf.Body) -> str:
    return f"binding:{body.metadata.uid or f'{body.metadata.namespace}/{body.metadata.name}'}"


async def write_status(state: State, body: kopf.Body, report: Report) -> None:
    """Merge `report` into the stored status; post a Warning Event for a refusal that the
    status did not show yet (a resync does not post the same Event again)."""
    client = state.kube()
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    try:
        live = await client.get(ASYABINDINGS, namespace, name)
    except kube.NotFound:
        return
    except kube.ApiError as exc:
        raise kopf.TemporaryError(f"cannot read the AsyaBinding: {exc}", delay=5) from exc
    old = binding_status.stored(live.get("status"))
    generation = (live.get("metadata") or {}).get("generation")
    new = binding_status.next_status(old, report, now=_now(), generation=generation)
    shown = status.find(old.conditions, binding_status.READY)
    ready = status.find(new.conditions, binding_status.READY)
    if (
        ready is not None
        and ready.status == binding_status.FALSE
        and (shown is None or (shown.reason, shown.message) != (ready.reason, ready.message))
    ):
        kopf.warn(body, reason=ready.reason, message=ready.message)
    if binding_status.to_json(old) == binding_status.to_json(new):
        return
    try:
        await client.patch_status(ASYABINDINGS, namespace, name, binding_status.to_json(new))
    except kube.NotFound:
        return
    except kube.ApiError as exc:
        raise kopf.TemporaryError(f"cannot write the status: {exc}", delay=5) from exc


async def refuse(state: State, body: kopf.Body, refusal: Refusal, retry: int) -> Exception:
    """Report the refusal; the error for kopf: retry soon, or wait for a change (the resync
    daemon still looks again)."""
    await write_status(state, body, Report(binding_status.refused(refusal)))
    if refusal.retry:
        return kopf.TemporaryError(refusal.message, delay=min(WAIT_S, backoff(retry)))
    return kopf.PermanentError(refusal.message)


async def reconcile(state: State, body: kopf.Body, logger: kopf.Logger, retry: int) -> None:
    async with state.lock(_key(body)):
        if body.metadata.deletion_timestamp is not None:
            return  # being released: a reconcile now would inject again after the undo
        await _reconcile(state, body, logger, retry)


async def _reconcile(state: State, body: kopf.Body, logger: kopf.Logger, retry: int) -> None:
    config = state.config
    client = state.kube()
    try:
        binding = AsyaBinding.from_object(dict(body))
    except pydantic.ValidationError as exc:
        message = describe(exc)
        invalid = Refusal(binding_status.INVALID_SPEC, message)
        raise await refuse(state, body, invalid, retry) from None
    namespace = binding.namespace
    old = binding_status.stored(body.get("status"))

    refusal = binding_decide.other_namespace(binding)
    if refusal is not None:
        raise await refuse(state, body, refusal, retry)
    try:
        plan = binding_render.plan(binding, config)
    except render.UnknownTransport:
        message = status.unknown_transport(binding.spec.transport.name, config.transports)
        refusal = Refusal(binding_status.TRANSPORT_NOT_CONFIGURED, message)
        raise await refuse(state, body, refusal, retry) from None
    except render.RenderError as exc:
        raise await refuse(
            state, body, Refusal(binding_status.RENDER_ERROR, str(exc)), retry
        ) from None

    ref = binding.spec.workload_ref
    resource = workload_resource(ref.api_version, ref.kind)
    try:
        found = await client.get(resource, namespace, ref.name)
        bindings = await client.list(ASYABINDINGS, namespace)
    except kube.NotFound:
        raise await refuse(state, body, binding_decide.missing(binding), retry) from None
    except kube.ApiError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from exc
    target = binding_decide.workload(found)
    refusal = binding_decide.other_claim(binding, bindings)
    if refusal is not None:
        raise await refuse(state, body, refusal, retry)
    mode = binding_decide.choose_mode(binding, target)
    if isinstance(mode, Refusal):
        raise await refuse(state, body, mode, retry)
    if mode == Mode.INJECT and binding.spec.scaling.enabled:
        try:
            autoscalers = await client.list(HPAS, namespace)
            scaled = await client.list(kube.SCALEDOBJECTS, namespace)
        except kube.ApiError as exc:
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from exc
        refusal = binding_decide.scaling_conflict(
            binding, target, autoscalers=autoscalers, scaled_objects=scaled
        )
        if refusal is not None:
            raise await refuse(state, body, refusal, retry)

    try:
        await state.admin().ensure(plan.transport_name, plan.transport, plan.queue)
    except BrokerUnavailable as exc:
        refusal = Refusal(binding_status.BROKER_UNAVAILABLE, str(exc), retry=True)
        raise await refuse(state, body, refusal, retry) from None
    except QueueAdminError as exc:
        raise await refuse(
            state, body, Refusal(binding_status.QUEUE_ERROR, str(exc)), retry
        ) from None

    await _leave_previous(client, binding, old, target, logger)
    current = binding_render.current_injection(
        old.injected, old.target.uid if old.target else None, target, binding.name
    )
    report_target = Target(
        api_version=target.api_version, kind=target.kind, name=target.name, uid=target.uid
    )
    common: dict[str, Any] = {
        "queue": plan.queue,
        "transport": plan.transport_name,
        "target": report_target,
    }
    try:
        if mode == Mode.BRIDGE:
            report = await _bridge(state, body, binding, target, plan, current, logger)
        else:
            report = await _inject(state, body, binding, target, plan, current, logger)
    except render.RenderError as exc:
        raise await refuse(
            state, body, Refusal(binding_status.RENDER_ERROR, str(exc)), retry
        ) from None
    except kube.NotFound as exc:
        # A missing resource type: KEDA's CRDs are not installed.
        refusal = Refusal(binding_status.KEDA_NOT_INSTALLED, str(exc), retry=True)
        raise await refuse(state, body, refusal, retry) from None
    except kube.ApiError as exc:
        if exc.temporary:
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from None
        message = f"the API server refused a rendered object: {exc}"
        raise await refuse(
            state, body, Refusal(binding_status.APPLY_ERROR, message), retry
        ) from None
    if isinstance(report, Refusal):
        raise await refuse(state, body, report, retry)
    await write_status(state, body, dataclasses.replace(report, **common))


def _own(objects: list[dict[str, Any]], body: kopf.Body) -> list[dict[str, Any]]:
    kopf.append_owner_reference(objects, owner=body)
    return objects


async def _apply(
    client: kube.Client, objects: list[dict[str, Any]], *, scaled: bool
) -> dict[str, Any] | None:
    """Apply in dependency order; the live Deployment, when one is among them."""
    deployment = None
    order = (kube.CONFIGMAPS, kube.TRIGGERAUTHENTICATIONS, kube.DEPLOYMENTS, kube.SCALEDOBJECTS)
    for resource in order:
        for obj in objects:
            if kube.resource_of(obj) != resource:
                continue
            keep = (("spec", "replicas"),) if scaled and resource == kube.DEPLOYMENTS else ()
            live = await client.apply(obj, keep=keep)
            if resource == kube.DEPLOYMENTS:
                deployment = live
    return deployment


async def _remove_unrendered(
    client: kube.Client,
    binding: AsyaBinding,
    objects: list[dict[str, Any]],
    names: Mapping[kube.Resource, str],
    logger: kopf.Logger,
) -> None:
    rendered = {(kube.resource_of(o), o["metadata"]["name"]) for o in objects}
    for resource, name in names.items():
        if (resource, name) not in rendered:
            await delete_owned(client, resource, binding.namespace, name, binding.uid, logger)


def _bridge_names(binding: AsyaBinding) -> dict[kube.Resource, str]:
    name = binding_render.bridge_name(binding)
    return {
        kube.SCALEDOBJECTS: name,
        kube.DEPLOYMENTS: name,
        kube.TRIGGERAUTHENTICATIONS: f"{name}-asya",
        kube.CONFIGMAPS: f"{name}-asya-runtime",
    }


def _inject_names(binding: AsyaBinding) -> dict[kube.Resource, str]:
    return {
        kube.SCALEDOBJECTS: binding.name,
        kube.TRIGGERAUTHENTICATIONS: f"{binding.name}-asya",
        kube.CONFIGMAPS: f"{binding.name}-asya-runtime",
    }


async def _bridge(
    state: State,
    body: kopf.Body,
    binding: AsyaBinding,
    target: binding_decide.Workload,
    plan: render.Plan,
    current: Injection | None,
    logger: kopf.Logger,
) -> Report | Refusal:
    client = state.kube()
    if current is not None:
        # Inject before (the mode changed, or an owner appeared): take the injection out.
        await _uninject(client, binding.namespace, target, current, logger)
    services: list[dict[str, Any]] = []
    if binding.spec.endpoint is None:
        services = await client.list(SERVICES, binding.namespace)
    endpoint = binding_decide.endpoint(binding, target, services)
    if isinstance(endpoint, Refusal):
        return endpoint
    objects = binding_render.bridge(
        binding,
        endpoint,
        config=state.config,
        plan=plan,
        runtime_source=render.bundled_runtime_source(),
    )
    scaled = binding.spec.scaling.enabled
    await _remove_unrendered(client, binding, objects, _bridge_names(binding), logger)
    await _remove_unrendered(client, binding, [], _inject_names(binding), logger)
    live = await _apply(client, _own(objects, body), scaled=scaled)
    name = binding_render.bridge_name(binding)
    owner = target.controller
    owner_text = f"{owner.kind} {owner.name}" if owner else None
    replicas = (
        f"the workload's replicas are left to {owner_text or 'its own settings'}; "
        f"KEDA scales {name}"
        if scaled
        else f"the workload's replicas are left to {owner_text or 'its own settings'}"
    )
    return Report(
        conditions=[
            binding_status.ready("bridge", endpoint),
            binding_status.bridge_ready(observed.rollout(live), name),
            binding_status.scaling(enabled=scaled, target=f"Deployment {name}", owner=owner_text),
        ],
        mode=Mode.BRIDGE.value,
        endpoint=endpoint,
        replicas=replicas,
        forget_injection=True,
    )


async def _inject(
    state: State,
    body: kopf.Body,
    binding: AsyaBinding,
    target: binding_decide.Workload,
    plan: render.Plan,
    current: Injection | None,
    logger: kopf.Logger,
) -> Report:
    client = state.kube()
    live_template = target.template or {}
    clean = live_template
    if current is not None:
        clean = binding_render.uninject(live_template, current)
    recorded = current.replicas if current is not None else None
    injected = binding_render.inject(
        binding,
        clean,
        # The count from before the first injection: since then KEDA has been setting it.
        replicas=recorded if recorded is not None else _replicas(target),
        grace_period=target.grace_period,
        workload_name=target.name,
        config=state.config,
        plan=plan,
        runtime_source=render.bundled_runtime_source(),
    )
    await _remove_unrendered(client, binding, [], _bridge_names(binding), logger)
    await _remove_unrendered(client, binding, injected.objects, _inject_names(binding), logger)
    await _apply(client, _own(injected.objects, body), scaled=binding.spec.scaling.enabled)
    patch = binding_render.template_patch(live_template, injected.template)
    restored = False
    if patch is not None:
        restored = current is not None
        patch["metadata"] = {
            "annotations": {binding_render.BOUND_BY_ANNOTATION: binding.name},
        }
        await client.patch(kube.DEPLOYMENTS, binding.namespace, target.name, patch)
        if restored:
            message = (
                f"Deployment {target.name} had lost what the binding injected (a re-applied "
                "manifest?); put back"
            )
            kopf.warn(body, reason="InjectionRestored", message=message)
            logger.warning(message)
    endpoint = f"http://{binding_render.LOCALHOST}:{binding.spec.caller.port}"
    scaled = binding.spec.scaling.enabled
    return Report(
        conditions=[
            binding_status.ready("inject", endpoint),
            binding_status.injected(restored=restored),
            binding_status.scaling(enabled=scaled, target=f"Deployment {target.name}", owner=None),
        ],
        mode=Mode.INJECT.value,
        endpoint=endpoint,
        replicas=(
            f"KEDA scales Deployment {target.name}"
            if scaled
            else f"Deployment {target.name} keeps its own replicas"
        ),
        injected=injected.injection,
    )


def _replicas(target: binding_decide.Workload) -> int:
    # An absent spec.replicas means 1 to the Deployment controller.
    return 1 if target.replicas is None else target.replicas


async def _uninject(
    client: kube.Client,
    namespace: str,
    target: binding_decide.Workload,
    injection: Injection,
    logger: kopf.Logger,
) -> None:
    template = target.template or {}
    patch = (
        binding_render.template_patch(template, binding_render.uninject(template, injection)) or {}
    )
    patch["metadata"] = {"annotations": {binding_render.BOUND_BY_ANNOTATION: None}}
    if injection.replicas is not None:
        # KEDA no longer scales it: give back the count it had, not the last one KEDA set.
        patch.setdefault("spec", {})["replicas"] = injection.replicas
    try:
        await client.patch(kube.DEPLOYMENTS, namespace, target.name, patch)
    except kube.NotFound:
        return
    logger.info("took the injection out of Deployment %s/%s", namespace, target.name)


# -- handlers ---------------------------------------------------------------------------


@kopf.on.create(GROUP, VERSION, PLURAL)
async def created(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    await reconcile(state_of(memo), body, logger, retry)


@kopf.on.update(GROUP, VERSION, PLURAL)
async def updated(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    await reconcile(state_of(memo), body, logger, retry)


@kopf.on.resume(GROUP, VERSION, PLURAL)
async def resumed(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    await reconcile(state_of(memo), body, logger, retry)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def resync(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Reconcile again every `resync_seconds`: drift, a workload that appeared, a conflict
    that went away."""
    state = state_of(memo)
    while not stopped:
        if await pause(stopped, state.resync_seconds):
            break
        try:
            await reconcile(state, body, logger, retry=0)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            logger.debug("resync: %s", exc)
        except Exception:
            logger.exception("resync failed; trying again in %gs", state.resync_seconds)


@kopf.on.delete(GROUP, VERSION, PLURAL, timeout=DELETE_TIMEOUT_S)
async def deleted(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    state = state_of(memo)
    async with state.lock(_key(body)):
        await _release(state, body, logger, retry)


async def _release(state: State, body: kopf.Body, logger: kopf.Logger, retry: int) -> None:
    client = state.kube()
    old = binding_status.stored(body.get("status"))
    await write_status(state, body, Report([], terminating=True))
    target = old.target
    if target is not None and target.kind == "Deployment" and target.name:
        try:
            live = await client.get(kube.DEPLOYMENTS, str(body.metadata.namespace), target.name)
        except kube.NotFound:
            live = None
        except kube.ApiError as exc:
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from exc
        if live is not None:
            workload = binding_decide.workload(live)
            # Only what this binding put into this very Deployment (one re-created under the
            # same name holds nothing of ours).
            current = binding_render.current_injection(
                old.injected, target.uid, workload, str(body.metadata.name)
            )
            if current is not None:
                await _uninject(client, workload.namespace, workload, current, logger)
    await _remove_queue(state, body, old, logger, retry)


async def _leave_previous(
    client: kube.Client,
    binding: AsyaBinding,
    old: AsyaBindingStatus,
    target: binding_decide.Workload,
    logger: kopf.Logger,
) -> None:
    """spec.workloadRef changed: take the injection out of the workload bound before."""
    previous = old.target
    if old.injected is None or previous is None or not previous.name:
        return
    if (previous.kind, previous.name) == (target.kind, target.name):
        return
    try:
        live = await client.get(kube.DEPLOYMENTS, binding.namespace, previous.name)
    except kube.NotFound:
        return
    workload = binding_decide.workload(live)
    if workload.uid == previous.uid:
        await _uninject(client, binding.namespace, workload, old.injected, logger)


async def _remove_queue(
    state: State, body: kopf.Body, old: AsyaBindingStatus, logger: kopf.Logger, retry: int
) -> None:
    queue, transport_name = old.queue, old.transport
    if not queue or not transport_name:
        # As handlers.planned_queue: killed after creating the queue, before the status.
        try:
            plan = binding_render.plan(AsyaBinding.from_object(dict(body)), state.config)
            queue, transport_name = plan.queue, plan.transport_name
        except (pydantic.ValidationError, render.RenderError):
            pass  # no reconcile could have created a queue for this spec
    ctx = deletion.Context(
        queue=queue,
        transport=transport_name,
        configured=transport_name in state.config.transports,
        policy=models.DeletionPolicy.DELETE_IF_EMPTY,
    )
    decision = deletion.decide(ctx)
    if isinstance(decision, deletion.Leave | deletion.Keep):
        logger.info(decision.message)
        return
    transport = state.config.transports[decision.transport]
    admin = state.admin()
    try:
        depth = await admin.depth(decision.transport, transport, decision.queue)
        if depth == 0:
            await admin.delete(decision.transport, transport, decision.queue)
            logger.info("deleted queue %s on %s", decision.queue, decision.transport)
            return
        held = "an unknown number of" if depth is None else str(depth)
        message = (
            f"queue {decision.queue} on {decision.transport} kept: it still holds {held} "
            "message(s); drain or delete it by hand"
        )
        kopf.warn(body, reason="QueueRetained", message=message)
    except QueueGone:
        return
    except BrokerUnavailable as exc:
        raise kopf.TemporaryError(
            f"cannot remove queue {decision.queue}: {exc}", delay=backoff(retry)
        ) from None
    except QueueAdminError as exc:
        kopf.warn(body, reason="QueueRetained", message=str(exc))
