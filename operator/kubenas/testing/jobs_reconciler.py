"""One reconciliation of one Job for the emulated Job controller (kubenas.testing.jobs,
whose docstring has the semantics): counts its finished pods, creates and deletes pods,
writes its status, and deletes it when its ttlSecondsAfterFinished has passed."""

from __future__ import annotations

import copy
import logging
from datetime import datetime
from typing import Protocol

from kubenas.testing.contract import ApiError, ObjectStore
from kubenas.testing.jobs_status import (
    COMPLETIONS_REACHED,
    CONTROLLER_UID_LABEL,
    FINISHED_CONDITIONS,
    JOB_NAME_LABEL,
    TRACKING_FINALIZER,
    JobKey,
    Tally,
    deleting,
    failure,
    find_condition,
    is_true,
    job_key,
    job_owner,
    parse_time,
    ready,
    rfc3339,
    set_condition,
    status_patch,
    stopping,
    terminal,
    tracked,
    utc_now,
)

JOBS = "batch/v1/jobs"
PODS = "v1/pods"

log = logging.getLogger(__name__)


class WakeLater(Protocol):
    def __call__(self, key: JobKey, *, seconds: float) -> None:
        """Reconciles `key` again after `seconds`."""


class JobReconciler:
    """Brings one Job at a time to what the store holds now (level-triggered)."""

    def __init__(self, *, store: ObjectStore, wake_later: WakeLater) -> None:
        self._store = store
        self._wake_later = wake_later

    async def sync(self, key: JobKey) -> None:
        namespace, name = key
        job = self._store.get(JOBS, namespace=namespace, name=name)
        pods, _ = self._store.list(PODS, namespace=namespace, label_selector=f"{JOB_NAME_LABEL}={name}")
        if job is None or job["metadata"].get("deletionTimestamp"):
            # The Job is going: its pods are garbage-collected, and must not wait for us.
            await self._release([pod for pod in pods if not stopping(pod)])
            return
        uid = job["metadata"]["uid"]
        mine = [pod for pod in pods if (job_owner(pod) or {}).get("uid") == uid]
        await self._release([pod for pod in pods if pod not in mine and not stopping(pod)])  # a previous Job's
        if job["spec"].get("completionMode", "NonIndexed") != "NonIndexed":
            log.warning("Job %s/%s: completionMode %s is not emulated", namespace, name, job["spec"]["completionMode"])
            return
        job, tally, released = await self._count_finished(job, mine)
        present = [pod for pod in mine if not (deleting(pod) and pod["metadata"]["uid"] in released)]  # released: gone
        await self._reconcile(job, present, tally=tally)

    async def _count_finished(self, job: dict, pods: list[dict]) -> tuple[dict, Tally, set[str]]:
        """Records newly finished pods as uncounted, releases the finalizers of the recorded
        ones unless a kubelet still stops them, and counts the released (see
        kubenas.testing.jobs's docstring). Returns the Job as stored now, the tally, the
        released pods' uids."""
        status = job.get("status") or {}
        uncounted = status.get("uncountedTerminatedPods") or {}
        succeeded_uids = list(uncounted.get("succeeded") or [])
        failed_uids = list(uncounted.get("failed") or [])
        recorded = set(succeeded_uids + failed_uids)
        newly_finished = [
            pod for pod in pods
            if tracked(pod) and (terminal(pod) or deleting(pod)) and pod["metadata"]["uid"] not in recorded
        ]
        if newly_finished:
            for pod in newly_finished:
                phase = (pod.get("status") or {}).get("phase")
                (succeeded_uids if phase == "Succeeded" else failed_uids).append(pod["metadata"]["uid"])
            job = await self._patch_status(
                job, {"uncountedTerminatedPods": {"succeeded": succeeded_uids or None, "failed": failed_uids or None}}
            )
        held = {pod["metadata"]["uid"] for pod in pods if stopping(pod)}
        await self._release([pod for pod in pods if pod["metadata"]["uid"] in set(succeeded_uids + failed_uids) - held])
        tally = Tally(
            counted_succeeded=status.get("succeeded", 0) + sum(uid not in held for uid in succeeded_uids),
            counted_failed=status.get("failed", 0) + sum(uid not in held for uid in failed_uids),
            uncounted_succeeded=[uid for uid in succeeded_uids if uid in held],
            uncounted_failed=[uid for uid in failed_uids if uid in held],
        )
        return job, tally, set(succeeded_uids + failed_uids) - held

    async def _release(self, pods: list[dict]) -> None:
        """Removes the tracking finalizer from these pods."""
        for pod in pods:
            metadata = pod["metadata"]
            if not tracked(pod):
                continue
            # A JSON patch that tests the entry it removes: others may edit the list meanwhile,
            # and a resourceVersion precondition would conflict with every status write.
            path = f"/metadata/finalizers/{metadata['finalizers'].index(TRACKING_FINALIZER)}"
            try:
                await self._store.patch(
                    PODS, namespace=metadata["namespace"], name=metadata["name"], patch_type="json",
                    patch=[{"op": "test", "path": path, "value": TRACKING_FINALIZER}, {"op": "remove", "path": path}],
                )
            except ApiError as error:
                if error.status != 404:
                    raise

    async def _reconcile(self, job: dict, pods: list[dict], *, tally: Tally) -> None:
        spec = job["spec"]
        succeeded, failed = tally.succeeded, tally.failed
        status = job.get("status") or {}
        now = utc_now()
        stamp = rfc3339(now)
        conditions = copy.deepcopy(status.get("conditions") or [])
        active = [pod for pod in pods if not terminal(pod) and not deleting(pod)]
        terminating = [pod for pod in pods if deleting(pod) and not terminal(pod)]
        start_time = status.get("startTime")
        completion_time = status.get("completionTime")

        async def stop(doomed: list[dict]) -> None:
            for pod in doomed:
                await self._delete_pod(pod)
                active.remove(pod)
                terminating.append(pod)

        if any(is_true(conditions, kind) for kind in FINISHED_CONDITIONS):
            await stop(list(active))
        elif spec.get("suspend"):
            await stop(list(active))
            set_condition(conditions, kind="Suspended", status="True", reason="JobSuspended", message="Job suspended", now=stamp)
        else:
            if is_true(conditions, "Suspended"):
                set_condition(conditions, kind="Suspended", status="False", reason="JobResumed", message="Job resumed", now=stamp)
                start_time = stamp  # a resumed Job's activeDeadlineSeconds counts from now
            start_time = start_time or stamp
            # The API server defaults completions to 1 unless parallelism alone is given (a work queue).
            completions = spec.get("completions", None if "parallelism" in spec else 1)
            failed_because = failure(job, conditions, pods=pods, failed=failed, start_time=parse_time(start_time), now=now)
            if failed_because is not None:
                reason, message = failed_because
                set_condition(conditions, kind="FailureTarget", status="True", reason=reason, message=message, now=stamp)
                await stop(list(active))
                if not terminating:  # Failed only once no pod of the Job runs any more
                    set_condition(conditions, kind="Failed", status="True", reason=reason, message=message, now=stamp)
            elif succeeded >= (completions or 1) and (completions is not None or not active):
                reason, message = COMPLETIONS_REACHED
                set_condition(conditions, kind="SuccessCriteriaMet", status="True", reason=reason, message=message, now=stamp)
                await stop(list(active))
                if not terminating:
                    set_condition(conditions, kind="Complete", status="True", reason=reason, message=message, now=stamp)
                    completion_time = stamp
            else:
                parallelism = spec.get("parallelism", 1)
                if completions is None:
                    wanted = 0 if succeeded else parallelism  # a work queue starts nothing after a success
                else:
                    wanted = min(parallelism, completions - succeeded)
                for _ in range(wanted - len(active)):
                    active.append(await self._create_pod(job))
                await stop(active[wanted:])  # parallelism lowered: stop the newest
                deadline = spec.get("activeDeadlineSeconds")
                if deadline is not None:
                    elapsed = (now - parse_time(start_time)).total_seconds()
                    self._wake_later(job_key(job), seconds=deadline - elapsed)
        desired = {
            "active": len(active) or None,
            "ready": sum(ready(pod) for pod in active),
            "terminating": len(terminating),
            **tally.status(),
            "startTime": start_time,
            "completionTime": completion_time,
            "conditions": conditions or None,
        }
        patch = status_patch(status, desired)
        if patch:
            job = await self._patch_status(job, patch)
        if any(is_true(conditions, kind) for kind in FINISHED_CONDITIONS):
            await self._expire(job, now=now)

    async def _expire(self, job: dict, *, now: datetime) -> None:
        """ttlSecondsAfterFinished: deletes the finished Job once its time has come, or
        schedules a look at that time."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        status = job.get("status") or {}
        finished_at = status.get("completionTime") or find_condition(status.get("conditions") or [], "Failed")["lastTransitionTime"]
        remaining = (parse_time(finished_at) - now).total_seconds() + ttl
        if remaining > 0:
            self._wake_later(job_key(job), seconds=remaining)
            return
        # As the TTL-after-finished controller does: Foreground, so the Job outlives its pods.
        metadata = job["metadata"]
        await self._store.delete(JOBS, namespace=metadata["namespace"], name=metadata["name"], propagation="Foreground")

    async def _create_pod(self, job: dict) -> dict:
        metadata = job["metadata"]
        template = copy.deepcopy(job["spec"]["template"])
        template_metadata = template.get("metadata") or {}
        labels = {
            **(template_metadata.get("labels") or {}),
            "controller-uid": metadata["uid"],
            "job-name": metadata["name"],
            CONTROLLER_UID_LABEL: metadata["uid"],
            JOB_NAME_LABEL: metadata["name"],
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{metadata['name']}-",
                "namespace": metadata["namespace"],
                "labels": labels,
                "annotations": template_metadata.get("annotations") or {},
                "finalizers": [TRACKING_FINALIZER],
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": metadata["name"], "uid": metadata["uid"],
                    "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": template["spec"],
        }
        return await self._store.create(PODS, pod, namespace=metadata["namespace"])

    async def _delete_pod(self, pod: dict) -> None:
        try:
            await self._store.delete(PODS, namespace=pod["metadata"]["namespace"], name=pod["metadata"]["name"])
        except ApiError as error:
            if error.status != 404:
                raise

    async def _patch_status(self, job: dict, patch: dict) -> dict:
        metadata = job["metadata"]
        return await self._store.patch(
            JOBS, namespace=metadata["namespace"], name=metadata["name"], patch={"status": patch}, subresource="status"
        )
