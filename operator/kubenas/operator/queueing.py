"""Kueue admission for children (spec.trial.queueName).

A search that names a Kueue LocalQueue (spec.trial.queueName, the template's label
`kueue.x-k8s.io/queue-name`, or the operator's default from --trainer-defaults) gets
children's Jobs created suspended with that label. Kueue makes a Workload of each,
admits it when its ClusterQueue's quota has room and unsuspends the Job; only then does
the Job controller create the pod, whose activeDeadlineSeconds (the child's deadline)
counts from its start: from admission. Until then the child is `Queued`: the Job's spec.suspend
and Suspended condition say so, and Kueue's Workload says why (kubenas.operator.workloads;
the operator only lists Workloads, and does without them where it may not).
"""

from __future__ import annotations

from kubenas import spec as specs
from kubenas.operator.trainer_defaults import TrainerDefaults

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
AWAITING_ADMISSION = "AwaitingAdmission"  # a queued child's reason


def queue_name(trial: specs.Trial, *, defaults: TrainerDefaults | None = None) -> str | None:
    """The LocalQueue of this search's children: spec.trial.queueName, else the template's
    label, else the operator's default (none: no Kueue, Jobs start at once)."""
    if trial.queue_name:
        return trial.queue_name
    labels = ((trial.template.metadata if trial.template else None) or {}).get("labels") or {}
    if labels.get(QUEUE_LABEL):
        return str(labels[QUEUE_LABEL])
    return defaults.queue_name if defaults is not None else None


def waiting_since(job: dict) -> str | None:
    """When the Job began waiting: its Suspended condition's transition (a Job Kueue evicted
    waits again from then), else its creation."""
    for entry in (job.get("status") or {}).get("conditions") or []:
        if entry.get("type") == "Suspended" and entry.get("status") == "True" and entry.get("lastTransitionTime"):
            return entry["lastTransitionTime"]
    return (job.get("metadata") or {}).get("creationTimestamp")


def awaiting_admission(job: dict) -> tuple[str, str] | None:
    """(reason, message) while a Job waits, suspended, for Kueue; None once it may run.
    A suspended Job that ran before (Kueue evicted or preempted it) waits again too."""
    if not (job.get("spec") or {}).get("suspend"):
        return None
    queue = ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
    suspended = next((c for c in (job.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Suspended" and c.get("status") == "True"), None)
    detail = f" ({suspended.get('message')})" if suspended and suspended.get("message") else ""
    if queue:
        return AWAITING_ADMISSION, f"the Job waits, suspended, for Kueue to admit it from LocalQueue {queue}{detail}"
    return "JobSuspended", f"the Job is suspended{detail}"
