"""A finished child's result, read from its Job and pod as Kubernetes reports them.

The trainer writes its result document to the termination-message file; the kubelet
puts it in the pod's `containerStatuses[0].state.terminated.message` (at most 4 KiB; the
trainer's documents are smaller). No sidecar: the pod status is the only channel.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from kubenas.evaluators import judge_output
from kubenas.search import failure


def condition(obj: dict, kind: str) -> dict | None:
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind and entry.get("status") == "True":
            return entry
    return None


def job_failed(job: dict) -> dict | None:
    """The Job's failure condition: Failed, or FailureTarget, which the Job controller sets
    as soon as the Job has failed while it waits for pods still terminating (a pod evicted
    from a lost node stays Terminating until its kubelet comes back)."""
    return condition(job, "Failed") or condition(job, "FailureTarget")


def job_finished(job: dict) -> bool:
    return condition(job, "Complete") is not None or job_failed(job) is not None


# Why Kubernetes disrupted a pod (its DisruptionTarget condition's reason) -> the child's reason.
DISRUPTIONS = {
    "DeletionByTaintManager": "NodeLost",  # evicted by a NoExecute taint: its node is unreachable or not ready
    "PreemptionByScheduler": "Preempted",  # a higher-priority pod took its place
    "EvictionByEvictionAPI": "Evicted",    # a drain or another eviction
    "TerminationByKubelet": "Evicted",     # node pressure or a node shutdown
    "DeletionByPodGC": "NodeLost",         # its node was deleted or put out of service
}


def disruption(pod: dict) -> dict | None:
    """A failure document for a pod Kubernetes took away, naming its node, else None."""
    for entry in (pod.get("status") or {}).get("conditions") or []:
        if entry.get("type") == "DisruptionTarget" and entry.get("status") == "True":
            reason = DISRUPTIONS.get(str(entry.get("reason")), "Disrupted")
            node = (pod.get("spec") or {}).get("nodeName") or "its node"
            return failure(reason, f"pod {pod['metadata']['name']} on {node}: {entry.get('reason')}: "
                                   f"{str(entry.get('message') or '')[:512]}".rstrip(": "))
    return None


def pods_of(job: dict, pods: Iterable[dict]) -> list[dict]:
    """The pods the Job itself made (its controller reference): anyone may create a pod
    carrying a child's labels, but not one owned by the operator's Job."""
    uid = job["metadata"].get("uid")
    return [pod for pod in pods if any(ref.get("uid") == uid and ref.get("controller")
                                       for ref in pod["metadata"].get("ownerReferences") or [])]


def pod_record(pod: dict) -> dict:
    """What a child's result needs of its pod, kept from the watch (the rest is dropped:
    thousands of children in flight hold these, not whole pods)."""
    metadata, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    disrupted = [entry for entry in status.get("conditions") or []
                 if entry.get("type") == "DisruptionTarget"]  # why Kubernetes took it away
    return {
        "metadata": {"name": metadata["name"], "ownerReferences": metadata.get("ownerReferences") or [],
                     "creationTimestamp": metadata.get("creationTimestamp")},
        "spec": {"nodeName": spec.get("nodeName"), "activeDeadlineSeconds": spec.get("activeDeadlineSeconds")},
        "status": {"containerStatuses": status.get("containerStatuses") or [], "conditions": disrupted,
                   "reason": status.get("reason")},
    }


def unschedulable(pod: dict) -> str | None:
    """The scheduler's message if no node can take this pod now, else None."""
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    for entry in status.get("conditions") or []:
        if entry.get("type") == "PodScheduled" and entry.get("status") == "False" and \
                entry.get("reason") == "Unschedulable":
            return str(entry.get("message") or "no node can take the pod")[:1024]
    return None


def terminated_state(pod: dict) -> dict | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (container.get("state") or {}).get("terminated")
        if state:
            return state
    return None


def job_result(job: dict, pods: list[dict]) -> tuple[dict, int | None]:
    """(result document, the trainer's exit code or None) of a finished Job."""
    failed = job_failed(job)
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return failure("DeadlineExceeded", f"ran longer than activeDeadlineSeconds={deadline}"), None
    ended = [(pod, state) for pod in pods if (state := terminated_state(pod)) is not None]
    if not ended and failed is not None:  # taken away before its trainer ended (evicted from a lost node)
        disrupted = [found for pod in sorted(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")
                     if (found := disruption(pod)) is not None]
        if disrupted:
            return disrupted[-1], None
    if not ended:
        why = (failed or {}).get("message") or "none of its pods reports a terminated trainer container"
        return failure((failed or {}).get("reason") or "PodMissing", why), None
    # The last pod tried is the one whose verdict stands (earlier ones were retries).
    pod, state = max(ended, key=lambda item: (item[1].get("finishedAt") or "", item[0]["metadata"]["name"]))
    exit_code = int(state.get("exitCode", 1))
    if (pod.get("status") or {}).get("reason") == "DeadlineExceeded":  # the pod's deadline (job_object)
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        return failure("DeadlineExceeded", f"ran longer than activeDeadlineSeconds={deadline}"), exit_code
    if condition(job, "Complete") is None and (disrupted := disruption(pod)) is not None:
        return disrupted, exit_code  # killed because Kubernetes took the pod away, not by its own fault
    if state.get("reason") == "OOMKilled":
        return failure("OOMKilled", f"pod {pod['metadata']['name']} ran out of memory (exit code {exit_code})"), exit_code
    if state.get("reason") == "ContainerStatusUnknown":  # what a kubelet reports of a container it lost
        node = (pod.get("spec") or {}).get("nodeName") or "its node"
        return failure("NodeLost", f"pod {pod['metadata']['name']}: {node} lost the trainer's container (the node "
                                   f"or its kubelet went away): {state.get('message') or ''}".rstrip(": ")), exit_code
    if condition(job, "Complete") is None and exit_code == 0:
        return failure((failed or {}).get("reason") or "Failed", (failed or {}).get("message") or ""), exit_code
    return judge_output(state.get("message"), exit_code=exit_code, source="termination message"), exit_code


def timestamp(value: str | None) -> float | None:
    """An RFC 3339 time of the API (`2026-11-27T23:40:00Z`) as unix seconds."""
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def child_times(job: dict, pods: list[dict]) -> tuple[float | None, float | None]:
    """(start, end) of a finished child, unix seconds: its last pod's trainer container
    where one terminated, else the Job's own start and completion (or failure) times."""
    states = [state for pod in pods if (state := terminated_state(pod)) is not None]
    last = max(states, key=lambda state: state.get("finishedAt") or "", default={})
    status = job.get("status") or {}
    ended = condition(job, "Complete") or job_failed(job) or {}
    start = timestamp(last.get("startedAt")) or timestamp(status.get("startTime"))
    end = (timestamp(last.get("finishedAt")) or timestamp(status.get("completionTime"))
           or timestamp(ended.get("lastTransitionTime")))
    return start, end
