"""Scenario 10: the operator killed (SIGKILL) again and again while AsyncActors and
AsyaBindings are applied, updated and deleted; then the cluster must converge to the specs.

The API server is kmock, the operator a real `asya operator` process (restarted after each
kill, as its Deployment would be) and the queues live on the run's real broker. A model of
the desired state is kept as the changes are made; at the end every resource is judged
against it: one that should exist has its objects exactly as asya_operator's own render
functions render its spec and its queue on the broker; one that was deleted is gone from the
API (its finalizer was cleared) and has no object or queue left behind. kmock runs no
controllers, so the scenario plays Kubernetes' garbage collector (faults/operator_cluster.py):
what the operator leaves without an owner reference is an orphan, what it left owned is
collected.

The published counts: sent = resources, succeeded = converged, lost = not converged (the
problems say why), duplicates = child objects beyond one of each kind per owner (Kubernetes
names are unique, so a duplicate is a second object owned by the same resource, or an owner
named twice on one object), faults_injected = kills.

Transports: the operator creates queues on RabbitMQ, SQS (moto) and Pub/Sub (the emulator).
The embedded "local" transport has no queues that an operator could administer (the
configuration has no such transport type), so the scenario does not run there.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
import yaml

from asya_operator import binding_render, kube, models, render
from asya_operator.binding_models import BRIDGE_SUFFIX, AsyaBinding
from asya_operator.config import OperatorConfig, parse
from asya_operator.handlers import FINALIZER
from asya_operator.queues import QueueAdmin, QueueGone
from faults.harness import Context, Sizes, wait_for
from faults.operator_cluster import BINDINGS, CHILDREN, Cluster, OperatorProcess, operator_config
from faults.outcome import Outcome
from faults.scenarios import Scenario

SCENARIO = "operator-kill"
TRANSPORT_NAME = "broker"
# Mean pause between two changes: kills land among them, a restart takes a few seconds.
CHANGE_GAP_S = 0.1
# A kill lands after a random number of the operator's API writes since it started (so amid
# its work: between a queue created and the status saying so, a Deployment applied and its
# ScaledObject not yet, ...), or after UP_MAX_S when it has nothing left to do.
MAX_WRITES_BEFORE_KILL = 30
UP_MAX_S = 5.0
DELETED_SHARE = 0.3
MAX_UPDATES = 3
POLL_S = 1.0
SHOWN_PROBLEMS = 12


@dataclass(frozen=True)
class OperatorSizes(Sizes):
    """`envelopes` is unused (no envelopes flow); `faults` is the number of kills."""

    actors: int = 10
    bindings: int = 2
    converge_s: float = 90.0


SIZES: dict[str, Sizes] = {
    "short": OperatorSizes(envelopes=0, faults=3, actors=10, bindings=2, converge_s=90.0),
    "default": OperatorSizes(envelopes=0, faults=8, actors=25, bindings=5, converge_s=180.0),
    "long": OperatorSizes(envelopes=0, faults=20, actors=50, bindings=10, converge_s=300.0),
}


# --- the desired state ------------------------------------------------------------------


@dataclass
class Desired:
    """One AsyncActor or AsyaBinding as the scenario asked for it last."""

    resource: kube.Resource
    name: str
    uid: str
    spec: dict[str, Any]
    deleted: bool = False
    changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # still to make

    @property
    def label(self) -> str:
        return f"{self.resource.kind} {self.name}"

    def manifest(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            # kmock keeps neither uid nor resourceVersion itself; kopf's patches test the latter.
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "uid": self.uid,
                "resourceVersion": "1",
            },
            "spec": copy.deepcopy(self.spec),
        }


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 merge patch, in place: what the API server does with the scenario's patches."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def workload_name(binding: str) -> str:
    return f"model-{binding}"


def plan_changes(ctx: Context, sizes: OperatorSizes, namespace: str) -> list[Desired]:
    """Every resource with its changes: created, updated 0-3 times, and for some, deleted."""
    rng = ctx.rng
    pubsub = ctx.transport == "pubsub"
    found: list[Desired] = []
    for i in range(sizes.actors):
        spec: dict[str, Any] = {
            "handler": "handler.run",
            "image": "example/handler:1",
            "concurrency": rng.randint(1, 8),
            "scaling": {"enabled": True, "minReplicas": 0, "maxReplicas": rng.randint(2, 10)},
        }
        if pubsub:
            # Pub/Sub cannot say whether a queue is empty, so DeleteIfEmpty keeps every queue
            # (docs/operator.md): Delete is what a Pub/Sub user sets to have it removed.
            spec["queue"] = {"deletionPolicy": "Delete"}
            # The emulator has no Cloud Monitoring metrics for KEDA: fixed replicas only.
            spec["scaling"] = {"enabled": False}
            spec["replicas"] = rng.randint(1, 3)
        found.append(Desired(kube.ASYNCACTORS, f"actor-{i:02d}", _uid(ctx), spec))
    for i in range(sizes.bindings):
        name = f"bind-{i:02d}"
        spec = {
            "workloadRef": {"kind": "Deployment", "name": workload_name(name)},
            "transport": {"name": TRANSPORT_NAME},
            "mode": "bridge",
            "endpoint": f"http://{workload_name(name)}.{namespace}.svc:8000",
            "scaling": (
                {"enabled": False}
                if pubsub
                else {"enabled": True, "minReplicas": 0, "maxReplicas": rng.randint(2, 10)}
            ),
            "caller": {"protocol": "openai-chat", "port": 8000},
            "concurrency": rng.randint(1, 8),
        }
        found.append(Desired(BINDINGS, name, _uid(ctx), spec))
    doomed = set(rng.sample(range(len(found)), round(len(found) * DELETED_SHARE)))
    for index, item in enumerate(found):
        model = copy.deepcopy(item.spec)
        item.changes.append(("create", {}))
        for _ in range(rng.randint(0, MAX_UPDATES)):
            patch = _update(ctx, item.resource, model)
            merge(model, patch)
            item.changes.append(("update", patch))
        if index in doomed:
            item.changes.append(("delete", {}))
    return found


def _uid(ctx: Context) -> str:
    return str(uuid.UUID(int=ctx.rng.getrandbits(128), version=4))


def _update(ctx: Context, resource: kube.Resource, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A random change of the kind users make: concurrency, scaling bounds, scaling on/off."""
    rng = ctx.rng
    choice = rng.choice(("concurrency", "bounds", "toggle", "env"))
    scaling_on = bool((spec.get("scaling") or {}).get("enabled", True))
    if choice == "concurrency":
        return {"concurrency": rng.randint(1, 16)}
    if choice == "bounds" and scaling_on:
        return {"scaling": {"maxReplicas": rng.randint(2, 20)}}
    if choice == "env":
        return {"env": [{"name": "FAULTS_GENERATION", "value": str(rng.randint(1, 10**6))}]}
    if ctx.transport == "pubsub":
        # KEDA cannot scale on the emulator: scaling stays off, the fixed count changes.
        if resource == kube.ASYNCACTORS:
            return {"replicas": rng.randint(1, 3)}
        return {"concurrency": rng.randint(1, 16)}
    if resource == kube.ASYNCACTORS:
        if scaling_on:
            return {"scaling": {"enabled": False}, "replicas": rng.randint(1, 3)}
        return {"scaling": {"enabled": True}, "replicas": None}
    return {"scaling": {"enabled": not scaling_on}}


def interleave(ctx: Context, resources: list[Desired]) -> list[tuple[Desired, str, dict[str, Any]]]:
    """All changes in a random order that keeps each resource's own order."""
    pending = {id(r): list(r.changes) for r in resources}
    order: list[tuple[Desired, str, dict[str, Any]]] = []
    while True:
        ready = [r for r in resources if pending[id(r)]]
        if not ready:
            return order
        chosen = ctx.rng.choice(ready)
        what, patch = pending[id(chosen)].pop(0)
        order.append((chosen, what, patch))


# --- making the changes -----------------------------------------------------------------


async def apply_change(
    cluster: Cluster, namespace: str, item: Desired, what: str, patch: dict[str, Any]
) -> None:
    api = cluster.api
    if what == "create":
        await api.create(item.resource, namespace, item.manifest(namespace))
    elif what == "update":
        await api.patch(item.resource, namespace, item.name, {"spec": patch})
        merge(item.spec, patch)
    elif what == "delete":
        await api.delete(item.resource, namespace, item.name)
        item.deleted = True
    else:
        raise ValueError(what)


def workload(namespace: str, name: str) -> dict[str, Any]:
    """A plain Deployment for a binding to bridge (a model server the user runs)."""
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "labels": labels,
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "server", "image": "example/model:1"}]},
            },
        },
    }


# --- judging the final state ------------------------------------------------------------


def stale(
    obj: Mapping[str, Any], live: Mapping[str, Any], owner: dict[str, Any], *, scaled: bool
) -> list[str]:
    """Where `live` is not what applying the rendered `obj` makes it: the paths the merge
    patch of one more apply would set or remove (none: converged). The apply is the
    operator's own (kube.Client.apply): with the owner reference, the annotation naming the
    managed fields, and a scaled Deployment's replicas left to KEDA."""
    owned = copy.deepcopy(dict(obj))
    kopf.append_owner_reference(owned, owner=kopf.Body(cast(kopf.RawBody, owner)))
    desired = kube.with_annotation(
        owned, kube.MANAGED_FIELDS_ANNOTATION, json.dumps(sorted(kube.leaf_paths(owned)))
    )
    keep = (("spec", "replicas"),) if scaled and kube.resource_of(obj) == kube.DEPLOYMENTS else ()
    patch = kube.merge_patch(live, desired, keep=keep)
    if patch is None:
        return []
    changed = [
        ".".join(path)
        for path in sorted(kube.leaf_paths(patch))
        if _get(patch, path) != _get(live, path)
    ]
    return changed or ["the managed-fields annotation"]


def _get(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = obj
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def scaled(item: Desired) -> bool:
    return bool((item.spec.get("scaling") or {}).get("enabled", True))


def rendered(item: Desired, namespace: str, config: OperatorConfig) -> tuple[str, list[Any]]:
    """(queue, objects) as asya_operator renders the desired spec."""
    manifest = item.manifest(namespace)
    if item.resource == kube.ASYNCACTORS:
        actor = models.AsyncActor.from_object(manifest)
        plan = render.plan(actor, config)
        return plan.queue, render.render(actor, config, plan=plan)
    binding = AsyaBinding.from_object(manifest)
    plan = binding_render.plan(binding, config)
    endpoint = str(binding.spec.endpoint).rstrip("/")
    objects = binding_render.bridge(
        binding,
        endpoint,
        config=config,
        plan=plan,
        runtime_source=render.bundled_runtime_source(),
    )
    return plan.queue, objects


def child_names(item: Desired) -> set[str]:
    """Every name an object of this resource can have (bridge or inject mode, for bindings)."""
    bases = [item.name]
    if item.resource == BINDINGS:
        bases.append(f"{item.name}{BRIDGE_SUFFIX}")
    return {n for base in bases for n in (base, f"{base}-asya", f"{base}-asya-runtime")}


def owner_uids(obj: Mapping[str, Any]) -> list[str]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [str(r.get("uid")) for r in refs if isinstance(r, dict)]


class Judge:
    """Reads the API and the broker once per round and says what has not converged."""

    def __init__(self, cluster: Cluster, namespace: str, config: OperatorConfig) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.config = config
        self.admin = QueueAdmin(config, None)
        self.transport = config.transports[TRANSPORT_NAME]
        self.retained: set[str] = set()  # queues kept by design (with the warning)

    async def warned(self, item: Desired, reason: str) -> bool:
        for event in await self.cluster.api.list(kube.EVENTS, self.namespace):
            involved = event.get("involvedObject") or {}
            if event.get("reason") == reason and involved.get("uid") == item.uid:
                return True
        return False

    async def queue_exists(self, queue: str) -> bool:
        try:
            await self.admin.depth(TRANSPORT_NAME, self.transport, queue)
        except QueueGone:
            return False
        return True

    async def children(self) -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for resource in CHILDREN:
            for obj in await self.cluster.api.list(resource, self.namespace):
                found[(resource.kind, str(obj["metadata"]["name"]))] = obj
        return found

    async def problems(self, item: Desired, children: Mapping[tuple[str, str], Any]) -> list[str]:
        live = await self.cluster.get(item.resource, self.namespace, item.name)
        queue, objects = rendered(item, self.namespace, self.config)
        mine = {key for key in children if key[1] in child_names(item)}
        if item.deleted:
            found = []
            if live is not None:
                finalizers = (live.get("metadata") or {}).get("finalizers")
                found.append(f"still in the API after its deletion (finalizers {finalizers})")
            found += [f"{kind} {name} left behind" for kind, name in sorted(mine)]
            if await self.queue_exists(queue):
                if item.resource == BINDINGS and self.transport.type == "pubsub":
                    # An AsyaBinding's queue goes only when empty, and Pub/Sub cannot say
                    # whether it is: kept by design, and the user must be told so.
                    if not await self.warned(item, "QueueRetained"):
                        found.append(f"queue {queue} kept without a QueueRetained warning")
                    else:
                        self.retained.add(queue)
                else:
                    found.append(f"queue {queue} left on the broker")
            return found
        if live is None:
            return ["gone from the API although never deleted"]
        found = []
        metadata = live.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            found.append("being deleted although never deleted")
        if FINALIZER not in (metadata.get("finalizers") or []):
            found.append(f"no {FINALIZER} finalizer")
        if live.get("spec") != item.spec:
            found.append("the API holds another spec than the one last applied")
        expected = set()
        for obj in objects:
            key = (str(obj["kind"]), str(obj["metadata"]["name"]))
            expected.add(key)
            have = children.get(key)
            if have is None:
                found.append(f"no {key[0]} {key[1]}")
                continue
            if item.uid not in owner_uids(have):
                found.append(f"{key[0]} {key[1]} is not owned by it")
            wrong = stale(obj, have, item.manifest(self.namespace), scaled=scaled(item))
            if wrong:
                found.append(f"{key[0]} {key[1]} differs from the spec at {', '.join(wrong[:4])}")
        found += [f"{kind} {name} left over" for kind, name in sorted(mine - expected)]
        if not await self.queue_exists(queue):
            found.append(f"no queue {queue} on the broker")
        return found

    def duplicates(self, children: Mapping[tuple[str, str], Mapping[str, Any]]) -> int:
        """Child objects beyond one of each kind per owner, and owners named twice."""
        per_owner: dict[tuple[str, str], int] = {}
        extra = 0
        for (kind, _name), obj in children.items():
            uids = owner_uids(obj)
            extra += len(uids) - len(set(uids))
            for uid in set(uids):
                per_owner[(uid, kind)] = per_owner.get((uid, kind), 0) + 1
        return extra + sum(count - 1 for count in per_owner.values() if count > 1)


async def amid_work(cluster: Cluster, since: int, writes: int) -> None:
    """Until the operator has made `writes` API writes after `since`, or UP_MAX_S passed."""
    with contextlib.suppress(TimeoutError):  # nothing left to do: it dies idle
        await wait_for(
            lambda: cluster.emulator.operator_writes - since >= writes,
            f"{writes} writes of the operator",
            UP_MAX_S,
        )


# --- the scenario -----------------------------------------------------------------------


async def operator_kill(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    if not isinstance(sizes, OperatorSizes):
        raise TypeError("operator-kill needs OperatorSizes")
    started = time.monotonic()
    root = Path(ctx.workdir) / f"operator-kill-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    namespace = f"opk-{uuid.uuid4().hex[:8]}"
    raw_config = operator_config(ctx.transport, TRANSPORT_NAME, ctx.broker.env)
    config = parse(raw_config)
    config_path = root / "operator.yaml"
    config_path.write_text(yaml.safe_dump(raw_config))
    resources = plan_changes(ctx, sizes, namespace)
    changes = interleave(ctx, resources)
    kill_after = sorted(ctx.rng.sample(range(1, len(changes)), min(sizes.faults, len(changes) - 1)))

    async with Cluster() as cluster:
        judge = Judge(cluster, namespace, config)
        operator = OperatorProcess(
            config=config_path,
            kubeconfig=cluster.kubeconfig(root / "kubeconfig"),
            namespace=namespace,
            log_path=root / "operator.log",
        )
        restart: asyncio.Task[None] | None = None
        try:
            for item in resources:
                if item.resource == BINDINGS:
                    manifest = workload(namespace, workload_name(item.name))
                    await cluster.api.create(kube.DEPLOYMENTS, namespace, manifest)
            await operator.start()
            ctx.log(
                f"operator-kill: {len(changes)} changes in {namespace}, kills after {kill_after}"
            )
            writes_at_start = cluster.emulator.operator_writes
            applying = 0.0
            for index, (item, what, patch) in enumerate(changes):
                before = time.monotonic()
                await apply_change(cluster, namespace, item, what, patch)
                applying += time.monotonic() - before
                if kill_after and kill_after[0] == index:
                    kill_after.pop(0)
                    if restart is not None:
                        await restart  # the previous restart: the operator must be up to die
                    await amid_work(
                        cluster, writes_at_start, ctx.rng.randint(1, MAX_WRITES_BEFORE_KILL)
                    )
                    await operator.kill()
                    ctx.log(
                        f"operator-kill: kill {len(operator.exit_codes)} after change {index + 1}"
                        f" at {time.monotonic() - started:.1f}s"
                    )
                    # Started again while the changes go on, as a pod is by its Deployment.
                    writes_at_start = cluster.emulator.operator_writes
                    restart = asyncio.create_task(operator.start())
                await asyncio.sleep(ctx.rng.uniform(0, 2 * CHANGE_GAP_S))
            if restart is not None:
                await restart
            changed_s = time.monotonic() - started
            ctx.log(f"operator-kill: the API took {applying:.1f}s for the changes")

            outcome_problems: dict[str, list[str]] = {}
            duplicates = 0
            deadline = time.monotonic() + sizes.converge_s
            while True:
                await cluster.collect_garbage(namespace)
                children = await judge.children()
                outcome_problems = {}
                for item in resources:
                    found = await judge.problems(item, children)
                    if found:
                        outcome_problems[item.label] = found
                duplicates = judge.duplicates(children)
                if (not outcome_problems and not duplicates) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(POLL_S)
            alive = operator.running
        finally:
            if restart is not None and not restart.done():
                restart.cancel()  # a run cut short while the operator was starting
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await restart
            await operator.stop()
            operator.close()
            await judge.admin.aclose()

    outcome = Outcome(
        scenario=SCENARIO,
        transport=ctx.transport,
        sent=len(resources),
        succeeded=len(resources) - len(outcome_problems),
        failed=0,
        in_sump=0,
        lost=len(outcome_problems),
        duplicates=duplicates,
        faults_injected=len(operator.exit_codes),
        # Duplicated objects cannot be put on one kill: all of them, as if one did it.
        max_dup_per_fault=duplicates,
        seconds=round(time.monotonic() - started, 1),
    )
    shown = [f"{label}: {'; '.join(found)}" for label, found in outcome_problems.items()]
    outcome.check(
        not outcome_problems,
        f"{len(outcome_problems)} resource(s) did not converge within {sizes.converge_s:g}s "
        f"after the last change: " + " | ".join(shown[:SHOWN_PROBLEMS]),
    )
    outcome.check(duplicates == 0, f"{duplicates} duplicated child object(s)")
    outcome.check(
        len(operator.exit_codes) == sizes.faults,
        f"{len(operator.exit_codes)} kill(s) of {sizes.faults}",
    )
    outcome.check(
        operator.exit_codes == [-9] * len(operator.exit_codes),
        f"operator exit codes {operator.exit_codes}, expected -9 (SIGKILL) each",
    )
    outcome.check(alive, "the operator was not running at the end (it exited by itself)")
    ctx.log(
        f"operator-kill: changes took {changed_s:.1f}s, converged or gave up "
        f"{outcome.seconds - changed_s:.1f}s later; operator log {operator.log_path}; "
        f"queues kept by design: {sorted(judge.retained)}; "
        + json.dumps({"unconverged": outcome_problems})[:2000]
    )
    return outcome


SCENARIOS = [
    Scenario(
        SCENARIO,
        "SIGKILL the operator while resources change",
        operator_kill,
        SIZES,
        transports=("rabbitmq", "sqs", "pubsub"),
    )
]
