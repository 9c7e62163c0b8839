"""What the operator reads back from the API, parsed once at the edge of a handler.

The handlers pass these values on to the pure decisions (status.py, deletion.py) instead of
raw JSON. Each parser takes a whole object as the API returned it and keeps the few fields
that matter:

    Actor      an AsyncActor as stored, readable even when its spec does not validate: the
               stored status, whether KEDA scales it, its queue's deletion policy
    Rollout    a Deployment: generation, replicas, its Available and Progressing conditions
    Scaler     a ScaledObject: KEDA's Ready condition

A field that does not parse is taken as absent, never as an error: a Deployment or a
ScaledObject is not ours to refuse, and an AsyncActor that is stored has been admitted
already (a bad spec is reported by the reconcile, which parses it strictly).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from asya_operator import models


@dataclass(frozen=True)
class KubeCondition:
    """One entry of status.conditions of a Kubernetes object; missing fields are ""."""

    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class Rollout:
    """A Deployment as its controller last reported on it."""

    generation: int | None
    observed_generation: int | None
    reported: bool  # the Deployment controller has written a status at all
    ready: int | None  # None: not reported yet
    desired: int | None
    available: KubeCondition | None
    progressing: KubeCondition | None


@dataclass(frozen=True)
class Scaler:
    """A ScaledObject as KEDA last reported on it."""

    ready: KubeCondition | None


@dataclass(frozen=True)
class Actor:
    """An AsyncActor as stored, with what the handlers need whether or not its spec is valid."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    status: models.AsyncActorStatus
    scaling_enabled: bool
    deletion_policy: models.DeletionPolicy


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _condition(conditions: object, kind: str) -> KubeCondition | None:
    """The first condition of type `kind`, as Kubernetes objects list them."""
    for item in conditions if isinstance(conditions, list) else ():
        if isinstance(item, Mapping) and item.get("type") == kind:
            return KubeCondition(
                _text(item.get("status")), _text(item.get("reason")), _text(item.get("message"))
            )
    return None


def rollout(deployment: Mapping[str, Any] | None) -> Rollout | None:
    """None when there is no Deployment."""
    if not deployment:
        return None
    spec, status = _mapping(deployment.get("spec")), _mapping(deployment.get("status"))
    desired = _int(spec.get("replicas"))
    if desired is None:
        # KEDA owns spec.replicas; until it writes one the API server's default (1) applies.
        desired = _int(status.get("replicas"))
    # A status without readyReplicas means none are ready (the field is omitted at zero).
    ready = _int(status.get("readyReplicas", 0)) if status else None
    conditions = status.get("conditions")
    return Rollout(
        generation=_int(_mapping(deployment.get("metadata")).get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        reported=bool(status),
        ready=ready,
        desired=desired,
        available=_condition(conditions, "Available"),
        progressing=_condition(conditions, "Progressing"),
    )


def scaler(scaled_object: Mapping[str, Any] | None) -> Scaler | None:
    """None when there is no ScaledObject."""
    if not scaled_object:
        return None
    status = _mapping(scaled_object.get("status"))
    return Scaler(ready=_condition(status.get("conditions"), "Ready"))


def _valid(model: type[pydantic.BaseModel], data: object) -> bool:
    try:
        model.model_validate(data)
    except pydantic.ValidationError:
        return False
    return True


def stored_status(raw: object) -> models.AsyncActorStatus:
    """An AsyncActor's status as stored.

    The API server holds it to the CRD's schema, so it parses. Should it not (written where
    nothing checked it, or by another version of the operator), what does not parse is left
    out field by field, and condition by condition, rather than refused: the operator must
    still be able to write a status over it and to delete the actor."""
    if not isinstance(raw, Mapping):
        return models.AsyncActorStatus()
    if _valid(models.AsyncActorStatus, raw):
        return models.AsyncActorStatus.model_validate(raw)
    fields: dict[str, Any] = {}
    for name, info in models.AsyncActorStatus.model_fields.items():
        key = info.alias or name
        if key not in raw:
            continue
        value = raw[key]
        if name == "conditions" and isinstance(value, list):
            value = [item for item in value if _valid(models.Condition, item)]
        if _valid(models.AsyncActorStatus, {key: value}):
            fields[key] = value
    return models.AsyncActorStatus.model_validate(fields)


def _deletion_policy(spec: Mapping[str, Any]) -> models.DeletionPolicy:
    raw = _mapping(spec.get("queue")).get("deletionPolicy")
    try:
        return models.DeletionPolicy(raw or models.DeletionPolicy.DELETE_IF_EMPTY)
    except ValueError:
        # The CRD admits only the three; anything else gets the default's caution.
        return models.DeletionPolicy.DELETE_IF_EMPTY


def actor(obj: Mapping[str, Any]) -> Actor:
    """From a kopf body or an object read from the API."""
    metadata, spec = _mapping(obj.get("metadata")), _mapping(obj.get("spec"))
    return Actor(
        namespace=_text(metadata.get("namespace")),
        name=_text(metadata.get("name")),
        uid=_text(metadata.get("uid")),
        generation=_int(metadata.get("generation")),
        status=stored_status(obj.get("status")),
        scaling_enabled=bool(_mapping(spec.get("scaling")).get("enabled", True)),
        deletion_policy=_deletion_policy(spec),
    )
