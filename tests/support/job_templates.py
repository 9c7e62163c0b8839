"""Job templates (ASYA_JOB_TEMPLATE) of each supported kind, a Launch on kmock's API emulator,
and a driver that runs Launch's generator as the runtime does. Shared by the callers' tests
(tests/callers/test_jobs.py) and the job watcher's (tests/operator/test_jobs_watch.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kmock
import pytest

from asya_callers import jobs as launch_jobs
from asya_runtime import runtime
from asya_shared import jobs

BATCH = """\
apiVersion: batch/v1
kind: Job
metadata:
  labels: {team: ml}
spec:
  backoffLimit: 0
  parallelism: ${workers}
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: score
          image: ghcr.io/example/batch-score:1
          args: ["--input=${dataset}", "--model", "${model}"]
"""

VOLCANO = """\
apiVersion: batch.volcano.sh/v1alpha1
kind: Job
spec:
  queue: default
  tasks:
    - name: worker
      replicas: ${workers}
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: worker
              image: ghcr.io/example/train:1
              args: ["--input=${dataset}"]
"""

PYTORCH = """\
apiVersion: kubeflow.org/v1
kind: PyTorchJob
spec:
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: OnFailure
      template:
        spec:
          containers:
            - name: pytorch
              image: ghcr.io/example/train:1
              args: ["--input=${dataset}"]
    Worker:
      replicas: ${workers}
      restartPolicy: OnFailure
      template:
        spec:
          containers:
            - name: pytorch
              image: ghcr.io/example/train:1
              args: ["--input=${dataset}"]
"""

TRAIN = """\
apiVersion: trainer.kubeflow.org/v1alpha1
kind: TrainJob
spec:
  runtimeRef: {name: torch-distributed}
  trainer:
    numNodes: ${workers}
    args: ["--input=${dataset}"]
"""

TEMPLATES = {
    jobs.BATCH_JOB: BATCH,
    jobs.VOLCANO_JOB: VOLCANO,
    jobs.PYTORCH_JOB: PYTORCH,
    jobs.TRAIN_JOB: TRAIN,
}
PAYLOAD = {"dataset": "s3://bucket/day-1", "workers": 2, "model": "ranker"}


def register_job_kinds(emulator: kmock.KubernetesEmulator) -> None:
    """Make the API emulator serve the four job kinds, as their CRDs would."""
    for kind in jobs.KINDS:
        emulator.resources[f"{kind.api_version}/{kind.plural}"] = kmock.ResourceInfo(
            kind=kind.kind,
            namespaced=True,
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            subresources={"status"},
        )


def make_launch(
    template: str,
    *,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    api_url: str,
    namespace: str,
    **env: str,
) -> launch_jobs.Launch:
    """A Launch configured as an actor's pod would be, against `api_url`."""
    path = tmp_path / "template.yaml"
    path.write_text(template)
    account = tmp_path / "serviceaccount"  # no token mounted: the emulator takes anyone
    account.mkdir(exist_ok=True)
    monkeypatch.setenv("ASYA_JOB_TEMPLATE", str(path))
    monkeypatch.setenv("ASYA_JOB_KUBE_API", api_url)
    monkeypatch.setenv("ASYA_JOB_NAMESPACE", namespace)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return launch_jobs.Launch(account_dir=account)


def envelope(
    payload: Any,
    *,
    id: str = "env-1",
    actor: str = "train",
    next: tuple[str, ...] = ("evaluate",),
    deadline_at: str | None = None,
) -> dict[str, Any]:
    return {
        "id": id,
        "route": {"prev": ["prepare"], "curr": actor, "next": list(next)},
        "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "status": {
            "phase": "processing",
            "actor": actor,
            "attempt": 1,
            "max_attempts": 1,
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
            "deadline_at": deadline_at,
            "reason": None,
            "error": None,
        },
        "payload": payload,
    }


async def run_handler(launch: launch_jobs.Launch, env: dict[str, Any]) -> tuple[Any, list[Any]]:
    """Run Launch.handle as the runtime runs a generator handler: GETs answered by the
    runtime's own Session; returns what it parked with and its FLY events. Fails if it
    produced a result frame (a parked envelope must not also go on)."""
    session = runtime.Session(env)
    generator = launch.handle(env["payload"])
    parked: Any = None
    answer: Any = None
    try:
        while True:
            item = await generator.asend(answer)
            if isinstance(item, tuple) and item and item[0] == launch_jobs.PARK:
                parked = item[1]
                answer = None
            else:
                answer = session.step(item)
    except StopAsyncIteration:
        pass
    assert not session.frames, f"Launch emitted frames: {session.frames}"
    assert parked is not None, "Launch did not park the envelope"
    return parked, session.fly
