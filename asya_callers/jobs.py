"""`asya_callers.jobs.Launch.handle`: start one batch job per envelope and park the envelope.

Training and batch inference run for hours, far longer than a sidecar should hold a slot. So
Launch creates the job, stores the envelope in it (an annotation) and parks the envelope:
the sidecar acks it and sends nothing on. When the job ends, the operator's job watcher
(asya_operator/jobs_watch.py) sends the continuation: the payload plus a `job` object to the
next actor, or the envelope to x-sink failed with reason `JobFailed`. docs/jobs.md has the
whole story, an AsyncActor per scheduler and the RBAC.

    ASYA_JOB_TEMPLATE       required: path of the job manifest (YAML, mounted from a
                            ConfigMap) with ${field} placeholders (job_template.py)
    ASYA_JOB_KUEUE_QUEUE    a Kueue LocalQueue: the job gets kueue.x-k8s.io/queue-name and
                            is created suspended, for Kueue to admit (not for Volcano jobs)
    ASYA_JOB_NAMESPACE      where jobs are created (default: the pod's own namespace)
    ASYA_JOB_NAME_PREFIX    job names are <prefix>-<hash of the envelope id> (default: the
                            actor's name)
    ASYA_JOB_TIMEOUT        per Kubernetes API call, seconds or a duration (default 30s)
    ASYA_JOB_KUBE_API       another API server than the pod's own (tests, kubectl proxy)

Idempotent: the job's name is derived from the envelope id, so a redelivered envelope finds
the job it created the first time instead of starting a second one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from asya_callers import job_manifest, job_template, kube_api
from asya_callers.errors import ConfigError, InvalidInput
from asya_callers.settings import Settings
from asya_shared import jobs

__all__ = ["PARK", "Launch"]

CALLER = "asya_callers.jobs.Launch"
# The runtime ABI's verb that ends a call without results and without finishing the
# envelope: the sidecar acks it and sends nothing on (docs/runtime-protocol.md).
PARK = "PARK"
_LABEL_VALUE_MAX = 63


class Launch:
    def __init__(self, account_dir: Path = kube_api.SERVICE_ACCOUNT_DIR) -> None:
        settings = Settings("ASYA_JOB_")
        path = settings.required(
            "TEMPLATE", "the path of the job manifest to launch, mounted from a ConfigMap"
        )
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(
                f"{settings.name('TEMPLATE')}={path!r} cannot be read: {exc.strerror or exc}; "
                "mount the template's ConfigMap at that path"
            ) from None
        self.template = job_template.parse(text, f"{settings.name('TEMPLATE')} ({path})")
        self.kueue_queue = settings.text("KUEUE_QUEUE")
        if self.kueue_queue is not None:
            if self.template.kind == jobs.VOLCANO_JOB:
                raise ConfigError(
                    f"{settings.name('KUEUE_QUEUE')} is set, but the template is a Volcano Job, "
                    "which Volcano queues itself: set spec.queue in the template instead"
                )
            if len(self.kueue_queue) > _LABEL_VALUE_MAX:
                raise ConfigError(
                    f"{settings.name('KUEUE_QUEUE')}={self.kueue_queue!r} is longer than a "
                    f"label value may be ({_LABEL_VALUE_MAX})"
                )
        self.name_prefix = settings.text("NAME_PREFIX")
        namespace = kube_api.namespace_of(os.environ, settings.name("NAMESPACE"), account_dir)
        if namespace is None:
            raise ConfigError(
                f"{settings.name('NAMESPACE')} is unset and the pod's namespace is not mounted "
                f"at {account_dir / 'namespace'}: name the namespace jobs go to"
            )
        self.namespace: str = namespace
        self.api = kube_api.KubeApi(
            kube_api.connection(os.environ, account_dir),
            timeout=settings.duration("TIMEOUT", 30.0),
        )

    async def handle(self, payload: Any) -> AsyncGenerator[Any, Any]:
        envelope = {
            "id": (yield "GET", ".id"),
            "parent_id": (yield "GET", ".parent_id"),
            "route": (yield "GET", ".route"),
            "headers": (yield "GET", ".headers"),
            "status": (yield "GET", ".status"),
            "payload": payload,
        }
        if envelope["parent_id"] is None:
            del envelope["parent_id"]
        if not isinstance(envelope["id"], str) or not envelope["id"]:
            raise InvalidInput(f"{CALLER}: the envelope has no id to name the job after")
        actor = str(envelope["route"]["curr"])
        filled = job_template.fill(self.template, payload)
        name = job_template.job_name(envelope["id"], self.name_prefix or actor)
        job = job_manifest.build(
            filled,
            kind=self.template.kind,
            name=name,
            namespace=self.namespace,
            actor=actor,
            envelope=envelope,
            kueue_queue=self.kueue_queue,
        )
        live, created = await self.api.create_or_get(self.template.kind, self.namespace, job)
        found = (live.get("metadata") or {}).get("annotations") or {}
        if not created and found.get(jobs.ANNOTATION_ENVELOPE_ID) != envelope["id"]:
            raise InvalidInput(
                f"{CALLER}: job {self.namespace}/{name} exists but was not launched for "
                f"envelope {envelope['id']!r} (its {jobs.ANNOTATION_ENVELOPE_ID} is "
                f"{found.get(jobs.ANNOTATION_ENVELOPE_ID)!r}); delete it or change "
                "ASYA_JOB_NAME_PREFIX"
            )
        yield (
            "FLY",
            {
                "job": {
                    "apiVersion": self.template.kind.api_version,
                    "kind": self.template.kind.kind,
                    "namespace": self.namespace,
                    "name": name,
                    "created": created,
                }
            },
        )
        yield PARK, {"job": f"{self.template.kind.plural}.{self.template.kind.group}/{name}"}
