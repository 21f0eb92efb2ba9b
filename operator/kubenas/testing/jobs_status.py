"""The emulated Job controller's pure part (kubenas.testing.jobs has the semantics): API
times, Job conditions, what a Job's pods say of themselves, the tally of finished pods,
whether a Job has failed, and the merge patch that writes a Job's status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
DEFAULT_BACKOFF_LIMIT = 6
FINISHED_CONDITIONS = ("Complete", "Failed")
TERMINAL_PHASES = ("Succeeded", "Failed")
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")

JobKey = tuple[str, str]  # (namespace, name)


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)  # API times have second resolution


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def find_condition(conditions: list[dict], kind: str) -> dict | None:
    return next((condition for condition in conditions if condition.get("type") == kind), None)


def is_true(conditions: list[dict], kind: str) -> bool:
    condition = find_condition(conditions, kind)
    return condition is not None and condition.get("status") == "True"


def set_condition(conditions: list[dict], *, kind: str, status: str, reason: str, message: str, now: str) -> None:
    """Adds or updates a condition in place; lastTransitionTime moves only when status does."""
    existing = find_condition(conditions, kind)
    if existing is None:
        conditions.append(
            {"type": kind, "status": status, "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now}
        )
    elif (existing.get("status"), existing.get("reason"), existing.get("message")) != (status, reason, message):
        if existing.get("status") != status:
            existing["lastTransitionTime"] = now
        existing.update(status=status, reason=reason, message=message, lastProbeTime=now)


def job_owner(pod: dict) -> dict | None:
    """The pod's controller ownerReference when a Job owns it."""
    for owner in pod["metadata"].get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") == "Job" and owner.get("apiVersion") == "batch/v1":
            return owner
    return None


def job_key(job: dict) -> JobKey:
    return job["metadata"]["namespace"], job["metadata"]["name"]


def terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def deleting(pod: dict) -> bool:
    return pod["metadata"].get("deletionTimestamp") is not None


def stopping(pod: dict) -> bool:
    """Deleted, and a kubelet is still stopping its containers (see kubenas.testing.jobs's
    docstring)."""
    return deleting(pod) and not terminal(pod) and bool(pod["spec"].get("nodeName"))


def tracked(pod: dict) -> bool:
    return TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or [])


def ready(pod: dict) -> bool:
    return is_true((pod.get("status") or {}).get("conditions") or [], "Ready")


def _restarts(pod: dict) -> int:
    status = pod.get("status") or {}
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    return sum(container.get("restartCount", 0) for container in statuses)


def status_patch(current: dict, desired: dict) -> dict:
    """A merge patch turning `current` into `desired` (None = absent); nested objects
    are replaced whole by naming their vanished keys as null."""
    patch: dict = {}
    for key in desired.keys() | current.keys():
        want, have = desired.get(key), current.get(key)
        if want == have:
            continue
        if isinstance(want, dict) and isinstance(have, dict):
            want = {**{gone: None for gone in have.keys() - want.keys()}, **want}
        patch[key] = want
    return patch


@dataclass
class Tally:
    """A Job's finished pods: counted in status.succeeded/failed, or recorded in
    uncountedTerminatedPods while their finalizer is still held."""

    counted_succeeded: int
    counted_failed: int
    uncounted_succeeded: list[str]
    uncounted_failed: list[str]

    @property
    def succeeded(self) -> int:
        return self.counted_succeeded + len(self.uncounted_succeeded)

    @property
    def failed(self) -> int:
        return self.counted_failed + len(self.uncounted_failed)

    def status(self) -> dict:
        uncounted = {"succeeded": self.uncounted_succeeded, "failed": self.uncounted_failed}
        return {
            "succeeded": self.counted_succeeded or None,
            "failed": self.counted_failed or None,
            "uncountedTerminatedPods": {kind: uids for kind, uids in uncounted.items() if uids},
        }


def failure(job: dict, conditions: list[dict], *, pods: list[dict], failed: int, start_time: datetime, now: datetime) -> tuple[str, str] | None:
    """(reason, message) when the Job has failed or must fail now, else None."""
    target = find_condition(conditions, "FailureTarget")
    if target is not None and target.get("status") == "True":
        return target["reason"], target["message"]
    spec = job["spec"]
    backoff_limit = spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)
    if failed > backoff_limit:
        return BACKOFF_LIMIT_EXCEEDED
    if spec["template"]["spec"].get("restartPolicy") == "OnFailure":
        # Containers restarted in place count as failures too (pastBackoffLimitOnFailure).
        restarts = sum(_restarts(pod) for pod in pods if (pod.get("status") or {}).get("phase") in ("Pending", "Running"))
        if restarts > 0 and restarts >= backoff_limit:
            return BACKOFF_LIMIT_EXCEEDED
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (now - start_time).total_seconds() >= deadline:
        return DEADLINE_EXCEEDED
    return None
