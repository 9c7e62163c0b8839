"""kopf handlers of AsyncActor: read, call the pure functions, apply, patch the status.

Lifecycle of one AsyncActor:

    create / update / resume   reconcile: spec -> transport -> queue -> render -> apply
                               -> remove what is no longer rendered -> status
    resync daemon              the same reconcile every `resync_seconds` (60), so hand edits
                               of managed fields and deleted queues come back
    refresh daemon             every `queueRefreshSeconds`: queue depth, replicas, KEDA's
                               verdict -> status (reads only; holds the actor's lock just
                               to write the status, never while it waits for a broker)
    delete                     the queue, by spec.queue.deletionPolicy; the owned objects go by
                               garbage collection (ownerReferences)

Each handler parses what it reads once (observed.py; the spec strictly, models.py) and
passes typed values on; what to do is decided by pure functions (render.py, status.py,
deletion.py), and the handlers only read, apply, write and report.

The periodic work runs in per-actor daemons rather than `@kopf.timer`, because their
intervals come from the configuration file, which is read only at startup, after the
decorators have run. One lock per actor keeps a resync from applying an older spec over a
newer one that an update handler applies at the same time.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pydantic

from asya_operator import deletion, kube, models, observed, render, status
from asya_operator.config import CONFIG_ENV, OperatorConfig, OperatorConfigError, load
from asya_operator.metrics import METRICS
from asya_operator.pause import pause
from asya_operator.queues import BrokerUnavailable, QueueAdmin, QueueAdminError, QueueGone

FINALIZER = "asya.sh/finalizer"
ANNOTATION_PREFIX = "asya.sh"
RESYNC_SECONDS = 60.0
MAX_BACKOFF_S = 60.0
KEDA_RETRY_S = 60.0
DELETE_TIMEOUT_S = 600.0
DEPLOYMENT_REPLICAS: kube.Path = ("spec", "replicas")

G, V, P = models.GROUP, models.VERSION, models.PLURAL


@dataclass
class State:
    """Everything one running operator shares between handlers (kept in kopf's memo)."""

    config: OperatorConfig
    settings: kopf.OperatorSettings
    resync_seconds: float = RESYNC_SECONDS
    connection: kopf.ConnectionInfo | None = None
    client: kube.Client | None = None
    queues: QueueAdmin | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def kube(self) -> kube.Client:
        if self.client is None:
            if self.connection is None:
                raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=5)
            self.client = kube.Client.from_connection_info(self.connection, relogin=self.relogin)
            self.queues = QueueAdmin(self.config, self.client)
        return self.client

    def admin(self) -> QueueAdmin:
        self.kube()
        assert self.queues is not None
        return self.queues

    async def relogin(self) -> kopf.ConnectionInfo | None:
        info = credentials(self.settings)
        if info is not None:
            self.connection = info
        return info

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    async def aclose(self) -> None:
        if self.queues is not None:
            await self.queues.aclose()
        if self.client is not None:
            await self.client.aclose()


def state_of(memo: kopf.Memo) -> State:
    found = memo.get("asya")
    if not isinstance(found, State):
        raise kopf.TemporaryError("the operator has not finished starting", delay=5)
    return found


def credentials(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """In a pod: its service account; elsewhere: the current context of the kubeconfig."""
    try:
        return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
    except (OSError, KeyError, ValueError, kopf.LoginError) as exc:
        # A missing or broken kubeconfig does not mend itself: stop with the reason.
        raise kopf.PermanentError(f"cannot log in to Kubernetes: {exc!r}") from exc


def configure(settings: kopf.OperatorSettings) -> None:
    # Peering off: one operator replica is the supported deployment (the Helm chart runs one,
    # with the Recreate strategy), so no KopfPeering CRD and no extra RBAC are needed.
    settings.peering.standalone = True
    settings.persistence.finalizer = FINALIZER
    # Annotations only: the AsyncActor's status schema is ours and has no room for kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Events for warnings and failures only: an Event per successful resync would be noise.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    # The CRD is installed before the operator and namespaces are given by exact name, so
    # there is nothing to discover at runtime (and no need to watch CRDs or namespaces).
    settings.scanning.disabled = True


@kopf.on.startup()
async def startup(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    configure(settings)
    path = os.environ.get(CONFIG_ENV, "").strip()
    if not path:
        raise kopf.PermanentError(
            f"{CONFIG_ENV} is not set: point it at the operator configuration file "
            "(or run `asya operator --config FILE`)"
        )
    try:
        config = load(path)
    except OperatorConfigError as exc:
        raise kopf.PermanentError(str(exc)) from None
    resync = float(memo.get("resync_seconds") or RESYNC_SECONDS)
    memo["asya"] = State(config=config, settings=settings, resync_seconds=resync)
    logger.info(
        "asya operator: transports %s (default %s), resync every %gs, status every %ss",
        ", ".join(sorted(config.transports)) or "none",
        config.transport_name(None) or "none",
        resync,
        config.queue_refresh_seconds,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    found = memo.get("asya")
    if isinstance(found, State):
        await found.aclose()


@kopf.on.login()
def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | None:
    info = credentials(settings)
    found = memo.get("asya")
    if isinstance(found, State) and info is not None:
        found.connection = info
    return info


# -- reconcile ----------------------------------------------------------------------------


def now() -> str:
    return status.timestamp(datetime.datetime.now(datetime.UTC))


def backoff(retry: int) -> float:
    return float(min(MAX_BACKOFF_S, 2 ** min(retry + 1, 6)))


def describe(error: pydantic.ValidationError) -> str:
    problems = [
        f"spec.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
    ]
    return "invalid spec: " + "; ".join(problems)


@dataclass
class Outcome:
    """What one reconcile learnt, for the status."""

    conditions: list[status.Condition] = field(default_factory=list)
    rollout: observed.Rollout | None = None
    queue: str | None = None
    transport: str | None = None
    scaling_enabled: bool = True


async def write_status(
    state: State,
    seen: observed.Actor,
    outcome: Outcome,
    *,
    queue_depth: int | None = None,
    terminating: bool = False,
    observer: bool = False,
) -> None:
    """Merge `outcome` into the stored status and write it if anything changed.

    An `observer` (the refresh daemon) does not overwrite a condition that holds a problem
    only a spec change can fix: that stays on display until a reconcile clears it."""
    client = state.kube()
    # The status as stored now, not as this handler's body saw it: another writer (the
    # refresh daemon, the last reconcile) may have changed it since.
    try:
        live = await client.get(kube.ASYNCACTORS, seen.namespace, seen.name)
    except kube.NotFound:
        return  # deleted meanwhile: nobody will read this status
    except kube.ApiError as exc:
        raise kopf.TemporaryError(f"cannot read the AsyncActor: {exc}", delay=5) from exc
    old = observed.stored_status(live.get("status"))
    conditions = outcome.conditions
    if observer:
        conditions = status.unless_permanent(conditions, shown=old.conditions)
    new = status.next_status(
        old,
        conditions,
        now=now(),
        generation=seen.generation,
        scaling_enabled=outcome.scaling_enabled,
        rollout=outcome.rollout,
        queue=outcome.queue,
        transport=outcome.transport,
        queue_depth=queue_depth,
        terminating=terminating,
    )
    METRICS.record_status(seen.namespace, seen.name, new)
    if not status.changed(old, new):
        return
    try:
        await client.patch_status(kube.ASYNCACTORS, seen.namespace, seen.name, status.to_json(new))
    except kube.NotFound:
        return  # deleted meanwhile: nobody will read this status
    except kube.ApiError as exc:
        raise kopf.TemporaryError(f"cannot write the status: {exc}", delay=5) from exc


async def fail(
    state: State,
    seen: observed.Actor,
    outcome: Outcome,
    conditions: list[status.Condition],
    message: str,
) -> kopf.PermanentError:
    outcome.conditions.extend(conditions)
    await write_status(state, seen, outcome)
    return kopf.PermanentError(message)


def _uid(body: kopf.Body) -> str:
    return str(body.metadata.uid or f"{body.metadata.namespace}/{body.metadata.name}")


async def reconcile(state: State, body: kopf.Body, logger: kopf.Logger, retry: int) -> None:
    async with state.lock(_uid(body)), METRICS.reconcile():
        await _reconcile(state, body, logger, retry)


async def _reconcile(state: State, body: kopf.Body, logger: kopf.Logger, retry: int) -> None:
    config = state.config
    seen = observed.actor(body)
    outcome = Outcome()
    try:
        actor = models.AsyncActor.from_object(dict(body))
    except pydantic.ValidationError as exc:
        message = describe(exc)
        raise await fail(
            state, seen, outcome, status.blocked(status.INVALID_SPEC, message), message
        ) from None
    outcome.scaling_enabled = actor.spec.scaling.enabled

    try:
        plan = render.plan(actor, config)
    except render.UnknownTransport:
        message = status.unknown_transport(actor.spec.transport, config.transports)
        raise await fail(
            state, seen, outcome, status.blocked(status.UNKNOWN_TRANSPORT, message), message
        ) from None
    except render.RenderError as exc:
        raise await fail(
            state, seen, outcome, status.blocked(status.RENDER_ERROR, str(exc)), str(exc)
        ) from None
    outcome.queue, outcome.transport = plan.queue, plan.transport_name

    try:
        with METRICS.queue_operation("ensure"):
            await state.admin().ensure(plan.transport_name, plan.transport, plan.queue)
    except BrokerUnavailable as exc:
        outcome.conditions += status.queue_unreachable(
            plan.transport_name, str(exc), shown=seen.status.conditions
        )
        await write_status(state, seen, outcome)
        raise kopf.TemporaryError(f"queue {plan.queue}: {exc}", delay=backoff(retry)) from None
    except QueueAdminError as exc:
        message = str(exc)
        conditions = status.queue_refused(plan.transport_name, message)
        raise await fail(state, seen, outcome, conditions, message) from None
    outcome.conditions.append(status.queue_ready(plan.queue, plan.transport_name))

    try:
        objects = render.render(actor, config, plan=plan)
    except render.RenderError as exc:
        message = str(exc)
        conditions = status.workload_blocked(status.RENDER_ERROR, message)
        raise await fail(state, seen, outcome, conditions, message) from None
    kopf.append_owner_reference(objects, owner=body)
    await apply_all(state, seen, actor, objects, outcome, logger)
    await write_status(state, seen, outcome)


def _is(obj: Mapping[str, Any], resource: kube.Resource) -> bool:
    return kube.resource_of(obj) == resource


async def apply_all(
    state: State,
    seen: observed.Actor,
    actor: models.AsyncActor,
    objects: list[dict[str, Any]],
    outcome: Outcome,
    logger: kopf.Logger,
) -> None:
    """Apply in dependency order; remove the KEDA objects no longer rendered.

    A ScaledObject that is going away is deleted before the Deployment gets its fixed
    `replicas`, so KEDA cannot scale over them; a TriggerAuthentication goes last, once no
    ScaledObject refers to it."""
    client = state.kube()
    scaling = actor.spec.scaling.enabled
    rendered = {kube.resource_of(obj) for obj in objects}
    name, namespace, uid = actor.name, actor.namespace, actor.uid
    keep = (DEPLOYMENT_REPLICAS,) if scaling else ()
    order = (
        kube.CONFIGMAPS,
        kube.TRIGGERAUTHENTICATIONS,
        kube.DEPLOYMENTS,
        kube.SCALEDOBJECTS,
    )
    resource = kube.SCALEDOBJECTS  # what is being written, for the error below
    try:
        if kube.SCALEDOBJECTS not in rendered:
            await delete_owned(client, kube.SCALEDOBJECTS, namespace, name, uid, logger)
        for resource in order:
            for obj in objects:
                if not _is(obj, resource):
                    continue
                live = await client.apply(obj, keep=keep if resource == kube.DEPLOYMENTS else ())
                if resource == kube.DEPLOYMENTS:
                    outcome.rollout = observed.rollout(live)
                    outcome.conditions.append(status.workload_condition(outcome.rollout))
                if resource == kube.SCALEDOBJECTS:
                    scaler = observed.scaler(live)
                    outcome.conditions.append(status.scaling_condition(scaler, enabled=True))
        resource = kube.TRIGGERAUTHENTICATIONS
        if kube.TRIGGERAUTHENTICATIONS not in rendered:
            await delete_owned(
                client, kube.TRIGGERAUTHENTICATIONS, namespace, f"{name}-asya", uid, logger
            )
    except kube.NotFound as exc:
        # Objects were just read or created, so a 404 means a missing resource type (KEDA's
        # CRDs not installed) or a namespace being deleted.
        message = f"{resource.kind}: {exc}"
        if resource in (kube.SCALEDOBJECTS, kube.TRIGGERAUTHENTICATIONS):
            outcome.conditions.append(status.keda_not_installed(str(exc)))
            await write_status(state, seen, outcome)
        raise kopf.TemporaryError(message, delay=KEDA_RETRY_S) from None
    except kube.ApiError as exc:
        if exc.temporary:
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from None
        message = f"the API server refused a rendered object: {exc}"
        conditions = status.workload_blocked(status.APPLY_ERROR, message)
        raise await fail(state, seen, outcome, conditions, message) from None
    if not scaling:
        outcome.conditions.append(
            status.scaling_condition(None, enabled=False, fixed_replicas=actor.spec.replicas)
        )


async def delete_owned(
    client: kube.Client,
    resource: kube.Resource,
    namespace: str,
    name: str,
    owner_uid: str,
    logger: kopf.Logger,
) -> None:
    """Delete an object this actor owns; leave alone one that merely shares the name."""
    try:
        live = await client.get(resource, namespace, name)
    except kube.NotFound:
        return
    refs = (live.get("metadata") or {}).get("ownerReferences") or []
    if not any(ref.get("uid") == owner_uid for ref in refs if isinstance(ref, dict)):
        return
    await client.delete(resource, namespace, name)
    logger.info("deleted %s %s/%s: no longer rendered", resource.kind, namespace, name)


@kopf.on.create(G, V, P)
async def created(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    await reconcile(state_of(memo), body, logger, retry)


@kopf.on.update(G, V, P)
async def updated(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    await reconcile(state_of(memo), body, logger, retry)


@kopf.on.resume(G, V, P)
async def resumed(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    await reconcile(state_of(memo), body, logger, retry)


# -- periodic work ------------------------------------------------------------------------


@kopf.daemon(G, V, P, cancellation_timeout=10.0)
async def resync(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Reconcile again every `resync_seconds`: the drift correction."""
    state = state_of(memo)
    while not stopped:
        if await pause(stopped, state.resync_seconds):
            break
        try:
            await reconcile(state, body, logger, retry=0)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            # The status says it already; the next round tries again.
            logger.debug("resync: %s", exc)
        except Exception:
            logger.exception("resync failed; trying again in %gs", state.resync_seconds)


@kopf.daemon(G, V, P, cancellation_timeout=10.0)
async def refresh(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Every `queueRefreshSeconds`: queue depth, replicas and KEDA's verdict into the status."""
    state = state_of(memo)
    while not stopped:
        if await pause(stopped, state.config.queue_refresh_seconds):
            break
        try:
            await refresh_once(state, body)
        except kopf.TemporaryError as exc:
            logger.debug("status refresh: %s", exc)
        except Exception:
            logger.exception("status refresh failed; trying again")


async def refresh_once(state: State, body: kopf.Body) -> None:
    seen = observed.actor(body)
    queue, transport_name = seen.status.queue, seen.status.transport
    if not queue or not transport_name or transport_name not in state.config.transports:
        return  # never reconciled successfully this far: the reconcile owns the status
    outcome = Outcome(scaling_enabled=seen.scaling_enabled)
    transport = state.config.transports[transport_name]
    depth: int | None = None
    try:
        with METRICS.queue_operation("depth"):
            depth = await state.admin().depth(transport_name, transport, queue)
        outcome.conditions.append(status.queue_ready(queue, transport_name))
    except BrokerUnavailable as exc:
        outcome.conditions.append(status.broker_unavailable(transport_name, str(exc)))
    except QueueGone:
        outcome.conditions.append(status.queue_missing(queue, transport_name))
    except QueueAdminError as exc:
        outcome.conditions.append(status.queue_error(transport_name, str(exc)))

    client = state.kube()
    try:
        deployment = await client.get(kube.DEPLOYMENTS, seen.namespace, seen.name)
        outcome.rollout = observed.rollout(deployment)
        outcome.conditions.append(status.workload_condition(outcome.rollout))
        if seen.scaling_enabled:
            scaled = await client.get(kube.SCALEDOBJECTS, seen.namespace, seen.name)
            scaler = observed.scaler(scaled)
            outcome.conditions.append(status.scaling_condition(scaler, enabled=True))
    except kube.NotFound:
        pass  # not applied yet, or removed by hand: the resync puts it back
    except kube.ApiError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from exc
    async with state.lock(_uid(body)):
        await write_status(state, seen, outcome, queue_depth=depth, observer=True)


# -- delete -------------------------------------------------------------------------------


@kopf.on.delete(G, V, P, timeout=DELETE_TIMEOUT_S)
async def deleted(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    await remove_queue(state_of(memo), body, logger, retry)
    # Only once the queue is settled: until then a retry shows the actor as Terminating.
    METRICS.forget(str(body.metadata.namespace), str(body.metadata.name))


async def remove_queue(state: State, body: kopf.Body, logger: kopf.Logger, retry: int) -> None:
    """Remove the queue as spec.queue.deletionPolicy says (deletion.py); owned objects go
    by GC."""
    seen = observed.actor(body)
    await write_status(state, seen, Outcome(scaling_enabled=seen.scaling_enabled), terminating=True)

    queue, transport_name = seen.status.queue, seen.status.transport
    if not queue or not transport_name:
        queue, transport_name = planned_queue(body, state.config)
    ctx = deletion.Context(
        queue=queue,
        transport=transport_name,
        configured=transport_name in state.config.transports,
        policy=seen.deletion_policy,
    )
    decision = deletion.decide(ctx)
    if isinstance(decision, deletion.Leave):
        logger.info(decision.message)
        return
    if isinstance(decision, deletion.Keep):
        _warn_kept(body, logger, decision)
        return
    queue, transport_name = decision.queue, decision.transport
    transport = state.config.transports[transport_name]
    admin = state.admin()
    try:
        with METRICS.queue_operation("depth"):
            depth = await admin.depth(transport_name, transport, queue)
        after = deletion.decide_on_depth(ctx, depth)
        if isinstance(after, deletion.Delete):
            with METRICS.queue_operation("delete"):
                await admin.delete(transport_name, transport, queue)
            logger.info("deleted queue %s on %s", queue, transport_name)
            return
    except QueueGone:
        return
    except BrokerUnavailable as exc:
        raise kopf.TemporaryError(
            f"cannot remove queue {queue}: {exc}", delay=backoff(retry)
        ) from None
    except QueueAdminError as exc:
        _warn_kept(body, logger, deletion.refused(ctx, str(exc)))
        return
    _warn_kept(body, logger, after)


def planned_queue(body: kopf.Body, config: OperatorConfig) -> tuple[str | None, str | None]:
    """(queue, transport) a reconcile creates for this spec, for an actor whose status names
    none: an operator killed after creating the queue and before writing the status left
    it so, and a deletion that trusted the status alone would leave the queue behind (a
    queue never created is found gone when measured)."""
    try:
        plan = render.plan(models.AsyncActor.from_object(dict(body)), config)
    except (pydantic.ValidationError, render.RenderError):
        return None, None  # no reconcile could have created a queue for this spec
    return plan.queue, plan.transport_name


def _warn_kept(body: kopf.Body, logger: kopf.Logger, keep: deletion.Keep) -> None:
    kopf.warn(body, reason="QueueRetained", message=keep.message)
    if keep.logged:
        logger.warning(keep.message)


# AsyaBinding's handlers share this module's State, and the job watcher continues launched
# batch jobs (docs/jobs.md): both are registered with kopf by the same import that registers
# AsyncActor's (asya operator, the tests).
from asya_operator import binding_handlers, jobs_watch  # noqa: E402, F401
