"""The job object Launch creates: the filled template, named after the envelope, labelled for
the operator's job watcher, carrying the parked envelope, plus what each scheduler needs.

Pure: data in, data out. Per kind:

- batch/v1 Job, PyTorchJob, TrainJob: with a Kueue queue (ASYA_JOB_KUEUE_QUEUE, or the
  `kueue.x-k8s.io/queue-name` label already in the template) the job gets that label and
  is created suspended (`spec.suspend`, `spec.runPolicy.suspend` for a PyTorchJob): Kueue
  admits it by unsuspending it when its quota allows.
- Volcano Job: `spec.schedulerName: volcano` unless the template names another scheduler,
  and `spec.minAvailable` (the gang: no pod starts until all of them can) defaults to the
  sum of the tasks' replicas. Volcano queues jobs itself (`spec.queue`), so a Kueue queue is
  refused for it at start.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from asya_callers.errors import InvalidInput
from asya_shared import jobs

__all__ = ["KUEUE_QUEUE_LABEL", "build"]

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


def build(
    filled: Mapping[str, Any],
    *,
    kind: jobs.JobKind,
    name: str,
    namespace: str,
    actor: str,
    envelope: Mapping[str, Any],
    kueue_queue: str | None,
) -> dict[str, Any]:
    """The object to create for `envelope`, from the template as filled from its payload."""
    job = copy.deepcopy(dict(filled))
    parked = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    if len(parked.encode()) > jobs.MAX_PARKED_BYTES:
        raise InvalidInput(
            f"the envelope is {len(parked.encode())} bytes as JSON; a launched job can carry at "
            f"most {jobs.MAX_PARKED_BYTES} (it is kept in the job's annotations until the job "
            "ends): pass large inputs by reference, e.g. an object-store URL"
        )
    metadata = job.setdefault("metadata", {})
    metadata["name"] = name
    metadata["namespace"] = namespace
    labels = metadata.setdefault("labels", {})
    labels[jobs.LABEL_LAUNCHED_BY] = actor
    labels.setdefault(MANAGED_BY_LABEL, "asya")
    annotations = metadata.setdefault("annotations", {})
    annotations[jobs.ANNOTATION_ENVELOPE_ID] = str(envelope["id"])
    annotations[jobs.ANNOTATION_ENVELOPE] = parked
    spec = job.setdefault("spec", {})
    if kind == jobs.VOLCANO_JOB:
        _volcano(spec)
        return job
    queue = kueue_queue or labels.get(KUEUE_QUEUE_LABEL)
    if queue:
        labels[KUEUE_QUEUE_LABEL] = queue
        # Kueue admits a job by unsuspending it; one created running would skip the quota.
        if kind == jobs.PYTORCH_JOB:
            spec.setdefault("runPolicy", {})["suspend"] = True
        else:
            spec["suspend"] = True
    return job


def _volcano(spec: dict[str, Any]) -> None:
    spec.setdefault("schedulerName", "volcano")
    if "minAvailable" not in spec:
        tasks = spec.get("tasks") or []
        total = sum(_replicas(task) for task in tasks if isinstance(task, dict))
        if total:
            spec["minAvailable"] = total


def _replicas(task: Mapping[str, Any]) -> int:
    value = task.get("replicas", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
