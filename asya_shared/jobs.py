"""Batch jobs launched from envelopes: the kinds, labels and annotations two processes share.

`asya_callers.jobs.Launch` creates a job and parks the envelope in it; the operator's job
watcher (asya_operator/jobs_watch.py) finds the jobs by their label, reads the parked
envelope back and sends the continuation when the job ends. Both name everything from here,
so the writer and the reader cannot drift apart.

Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

# On every launched job: the actor that launched it (its value), so the watcher selects
# Asya's jobs with one label selector and knows whose transport to send on.
LABEL_LAUNCHED_BY = "asya.sh/launched-by"
# The envelope as Launch received it (JSON), to be continued when the job ends.
ANNOTATION_ENVELOPE = "asya.sh/envelope"
# The envelope id in clear (the job name holds only a hash of it).
ANNOTATION_ENVELOPE_ID = "asya.sh/envelope-id"
# The watcher's progress on one job: "claimed:<holder>" while it sends, then "sent".
ANNOTATION_CONTINUATION = "asya.sh/continuation"
CONTINUATION_SENT = "sent"
CLAIMED_PREFIX = "claimed:"

# Kubernetes allows 256 KiB for all annotations of an object together; the parked envelope
# gets most of it, the rest is left for the schedulers' and the user's own annotations.
MAX_PARKED_BYTES = 200 * 1024


@dataclass(frozen=True)
class JobKind:
    """A kind of batch job, as the API server addresses it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


BATCH_JOB = JobKind("batch", "v1", "jobs", "Job")
VOLCANO_JOB = JobKind("batch.volcano.sh", "v1alpha1", "jobs", "Job")
PYTORCH_JOB = JobKind("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
TRAIN_JOB = JobKind("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
KINDS = (BATCH_JOB, VOLCANO_JOB, PYTORCH_JOB, TRAIN_JOB)


def kind_of(api_version: object, kind: object) -> JobKind | None:
    """The known kind with this apiVersion and kind, or None."""
    for known in KINDS:
        if known.api_version == api_version and known.kind == kind:
            return known
    return None


def described() -> str:
    """The supported kinds, for messages."""
    return ", ".join(f"{k.api_version} {k.kind}" for k in KINDS)
