"""The emulated cluster's Job controller: batch/v1 Job semantics as Kubernetes 1.31
reports them, for NonIndexed Jobs (the operator's trials use completions=parallelism=1).

It is an API client of the object store like kube-controller-manager: it watches Jobs
and Pods and reconciles each Job from what the store holds now (level-triggered), so a
controller restarted on the same store picks every Job up where it was.

Pods are counted the way Kubernetes counts them since 1.26: each Job pod carries the
`batch.kubernetes.io/job-tracking` finalizer; a finished pod is first recorded in
`status.uncountedTerminatedPods`, then its finalizer is removed, then it moves into
`succeeded`/`failed`. A pod is thus counted exactly once, even across restarts, and a
deleted pod that never reached a terminal phase counts as failed (podReplacementPolicy
TerminatingOrFailed, the default without a podFailurePolicy). One difference: the
finalizer of a deleted pod that a kubelet is still stopping is kept until the kubelet
reports it terminal. A real API server keeps such a pod through graceful deletion; the
emulated store removes a pod at once, so the finalizer stands in, and a Job is Failed or
Complete only once its processes are gone, as in a real cluster.

Not emulated: Indexed completion mode (such Jobs are left untouched, with a warning),
podFailurePolicy, successPolicy, backoffLimitPerIndex, the exponential delay before
replacement pods (they are created at once), and Events.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from kubenas.testing.contract import ApiError, ObjectStore

JOBS = "batch/v1/jobs"
PODS = "v1/pods"
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
DEFAULT_BACKOFF_LIMIT = 6
FINISHED_CONDITIONS = ("Complete", "Failed")
TERMINAL_PHASES = ("Succeeded", "Failed")
COMPLETIONS_REACHED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Job was active longer than specified deadline")

log = logging.getLogger(__name__)

JobKey = tuple[str, str]  # (namespace, name)


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)  # API times have second resolution


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _condition(conditions: list[dict], kind: str) -> dict | None:
    return next((condition for condition in conditions if condition.get("type") == kind), None)


def _is_true(conditions: list[dict], kind: str) -> bool:
    condition = _condition(conditions, kind)
    return condition is not None and condition.get("status") == "True"


def _set_condition(conditions: list[dict], *, kind: str, status: str, reason: str, message: str, now: str) -> None:
    """Adds or updates a condition in place; lastTransitionTime moves only when status does."""
    existing = _condition(conditions, kind)
    if existing is None:
        conditions.append(
            {"type": kind, "status": status, "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now}
        )
    elif (existing.get("status"), existing.get("reason"), existing.get("message")) != (status, reason, message):
        if existing.get("status") != status:
            existing["lastTransitionTime"] = now
        existing.update(status=status, reason=reason, message=message, lastProbeTime=now)


def _job_owner(pod: dict) -> dict | None:
    """The pod's controller ownerReference when a Job owns it."""
    for owner in pod["metadata"].get("ownerReferences") or []:
        if owner.get("controller") and owner.get("kind") == "Job" and owner.get("apiVersion") == "batch/v1":
            return owner
    return None


def _key(job: dict) -> JobKey:
    return job["metadata"]["namespace"], job["metadata"]["name"]


def _terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def _deleting(pod: dict) -> bool:
    return pod["metadata"].get("deletionTimestamp") is not None


def _stopping(pod: dict) -> bool:
    """Deleted, and a kubelet is still stopping its containers (see the module docstring)."""
    return _deleting(pod) and not _terminal(pod) and bool(pod["spec"].get("nodeName"))


def _tracked(pod: dict) -> bool:
    return TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or [])


def _ready(pod: dict) -> bool:
    return _is_true((pod.get("status") or {}).get("conditions") or [], "Ready")


def _restarts(pod: dict) -> int:
    status = pod.get("status") or {}
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    return sum(container.get("restartCount", 0) for container in statuses)


def _status_patch(current: dict, desired: dict) -> dict:
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
class _Tally:
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


class JobController:
    """Runs the Jobs in the store: creates their pods, tracks them into Job status,
    enforces backoffLimit, activeDeadlineSeconds, suspend and ttlSecondsAfterFinished."""

    def __init__(self, *, store: ObjectStore) -> None:
        self._store = store
        self._queue: asyncio.Queue[JobKey] = asyncio.Queue()
        self._queued: set[JobKey] = set()
        self._timers: dict[JobKey, asyncio.TimerHandle] = {}
        self._failures: dict[JobKey, int] = {}  # consecutive failed syncs, for the retry delay
        self._stop = asyncio.Event()
        self._running: asyncio.Task | None = None

    async def run(self) -> None:
        """Reconciles until close(), cancellation, or the store closing its watches."""
        self._running = asyncio.current_task()
        tasks = [
            asyncio.create_task(self._watch_jobs()),
            asyncio.create_task(self._watch_pods()),
            asyncio.create_task(self._reconcile_queued()),
        ]
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop}:
                task.result()  # a watch that failed, rather than one the closed store ended
        finally:
            for task in [*tasks, stop]:
                task.cancel()
            await asyncio.gather(*tasks, stop, return_exceptions=True)
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    async def close(self) -> None:
        self._stop.set()
        if self._running is not None and self._running is not asyncio.current_task():
            await asyncio.wait([self._running])

    async def _watch_jobs(self) -> None:
        await self._follow(JOBS, lambda job: self._enqueue(_key(job)))

    async def _watch_pods(self) -> None:
        def enqueue_owner(pod: dict) -> None:
            owner = _job_owner(pod)
            if owner is not None:
                self._enqueue((pod["metadata"]["namespace"], owner["name"]))

        await self._follow(PODS, enqueue_owner)

    async def _follow(self, resource: str, on_change: Callable[[dict], None]) -> None:
        """List, then watch from the list's resourceVersion; relist when the watch expires
        (410 Gone: too far behind). Every Job a change touches is reconciled whole, so
        a missed event costs nothing once the relist has been seen."""
        while True:
            objects, version = self._store.list(resource)
            for obj in objects:
                on_change(obj)
            try:
                async for event in self._store.watch(resource, resource_version=version):
                    on_change(event["object"])
                return  # the store closed
            except ApiError as error:
                if error.status != 410:
                    raise
                log.info("%s watch expired (%s): relisting", resource, error.message)

    def _enqueue(self, key: JobKey) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _wake_later(self, key: JobKey, *, seconds: float) -> None:
        """Reconciles `key` again after `seconds`; only the earliest wake-up is kept, as each
        reconciliation schedules the next one it needs."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(seconds, 0.0)
        current = self._timers.get(key)
        if current is not None:
            if current.when() <= when:
                return
            current.cancel()
        self._timers[key] = loop.call_at(when, self._wake, key)

    def _wake(self, key: JobKey) -> None:
        self._timers.pop(key, None)
        self._enqueue(key)

    async def _reconcile_queued(self) -> None:
        # One worker: each Job is reconciled by one coroutine at a time, so a Job never
        # sees two syncs race to create its pod. Syncs are in-memory store calls, fast.
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self._sync(key)
            except ApiError as error:  # a conflict or a vanished object: look again shortly
                self._retry(key, f"{error}")
            except Exception as error:
                log.exception("Job %s/%s: reconciliation failed", *key)
                self._retry(key, f"{error!r}")
            else:
                self._failures.pop(key, None)

    def _retry(self, key: JobKey, reason: str) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(0.05 * 2**failures, 30.0)
        log.debug("Job %s/%s: retrying in %.2f s after %s", *key, delay, reason)
        self._wake_later(key, seconds=delay)

    async def _sync(self, key: JobKey) -> None:
        namespace, name = key
        job = self._store.get(JOBS, namespace=namespace, name=name)
        pods, _ = self._store.list(PODS, namespace=namespace, label_selector=f"{JOB_NAME_LABEL}={name}")
        if job is None or job["metadata"].get("deletionTimestamp"):
            # The Job is going: its pods are garbage-collected, and must not wait for us.
            await self._release([pod for pod in pods if not _stopping(pod)])
            return
        uid = job["metadata"]["uid"]
        mine = [pod for pod in pods if (_job_owner(pod) or {}).get("uid") == uid]
        await self._release([pod for pod in pods if pod not in mine and not _stopping(pod)])  # a previous Job's
        if job["spec"].get("completionMode", "NonIndexed") != "NonIndexed":
            log.warning("Job %s/%s: completionMode %s is not emulated", namespace, name, job["spec"]["completionMode"])
            return
        job, tally, released = await self._count_finished(job, mine)
        present = [pod for pod in mine if not (_deleting(pod) and pod["metadata"]["uid"] in released)]  # released: gone
        await self._reconcile(job, present, tally=tally)

    async def _count_finished(self, job: dict, pods: list[dict]) -> tuple[dict, _Tally, set[str]]:
        """Records newly finished pods as uncounted, releases the finalizers of the recorded
        ones unless a kubelet still stops them, and counts the released (see the module
        docstring). Returns the Job as stored now, the tally, the released pods' uids."""
        status = job.get("status") or {}
        uncounted = status.get("uncountedTerminatedPods") or {}
        succeeded_uids = list(uncounted.get("succeeded") or [])
        failed_uids = list(uncounted.get("failed") or [])
        recorded = set(succeeded_uids + failed_uids)
        newly_finished = [
            pod for pod in pods
            if _tracked(pod) and (_terminal(pod) or _deleting(pod)) and pod["metadata"]["uid"] not in recorded
        ]
        if newly_finished:
            for pod in newly_finished:
                phase = (pod.get("status") or {}).get("phase")
                (succeeded_uids if phase == "Succeeded" else failed_uids).append(pod["metadata"]["uid"])
            job = await self._patch_status(
                job, {"uncountedTerminatedPods": {"succeeded": succeeded_uids or None, "failed": failed_uids or None}}
            )
        held = {pod["metadata"]["uid"] for pod in pods if _stopping(pod)}
        await self._release([pod for pod in pods if pod["metadata"]["uid"] in set(succeeded_uids + failed_uids) - held])
        tally = _Tally(
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
            if not _tracked(pod):
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

    async def _reconcile(self, job: dict, pods: list[dict], *, tally: _Tally) -> None:
        spec = job["spec"]
        succeeded, failed = tally.succeeded, tally.failed
        status = job.get("status") or {}
        now = utc_now()
        stamp = rfc3339(now)
        conditions = copy.deepcopy(status.get("conditions") or [])
        active = [pod for pod in pods if not _terminal(pod) and not _deleting(pod)]
        terminating = [pod for pod in pods if _deleting(pod) and not _terminal(pod)]
        start_time = status.get("startTime")
        completion_time = status.get("completionTime")

        async def stop(doomed: list[dict]) -> None:
            for pod in doomed:
                await self._delete_pod(pod)
                active.remove(pod)
                terminating.append(pod)

        if any(_is_true(conditions, kind) for kind in FINISHED_CONDITIONS):
            await stop(list(active))
        elif spec.get("suspend"):
            await stop(list(active))
            _set_condition(conditions, kind="Suspended", status="True", reason="JobSuspended", message="Job suspended", now=stamp)
        else:
            if _is_true(conditions, "Suspended"):
                _set_condition(conditions, kind="Suspended", status="False", reason="JobResumed", message="Job resumed", now=stamp)
                start_time = stamp  # a resumed Job's activeDeadlineSeconds counts from now
            start_time = start_time or stamp
            # The API server defaults completions to 1 unless parallelism alone is given (a work queue).
            completions = spec.get("completions", None if "parallelism" in spec else 1)
            failure = self._failure(job, conditions, pods=pods, failed=failed, start_time=parse_time(start_time), now=now)
            if failure is not None:
                reason, message = failure
                _set_condition(conditions, kind="FailureTarget", status="True", reason=reason, message=message, now=stamp)
                await stop(list(active))
                if not terminating:  # Failed only once no pod of the Job runs any more
                    _set_condition(conditions, kind="Failed", status="True", reason=reason, message=message, now=stamp)
            elif succeeded >= (completions or 1) and (completions is not None or not active):
                reason, message = COMPLETIONS_REACHED
                _set_condition(conditions, kind="SuccessCriteriaMet", status="True", reason=reason, message=message, now=stamp)
                await stop(list(active))
                if not terminating:
                    _set_condition(conditions, kind="Complete", status="True", reason=reason, message=message, now=stamp)
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
                    self._wake_later(_key(job), seconds=deadline - elapsed)
        desired = {
            "active": len(active) or None,
            "ready": sum(_ready(pod) for pod in active),
            "terminating": len(terminating),
            **tally.status(),
            "startTime": start_time,
            "completionTime": completion_time,
            "conditions": conditions or None,
        }
        patch = _status_patch(status, desired)
        if patch:
            job = await self._patch_status(job, patch)
        if any(_is_true(conditions, kind) for kind in FINISHED_CONDITIONS):
            await self._expire(job, now=now)

    def _failure(self, job: dict, conditions: list[dict], *, pods: list[dict], failed: int, start_time: datetime, now: datetime) -> tuple[str, str] | None:
        """(reason, message) when the Job has failed or must fail now, else None."""
        target = _condition(conditions, "FailureTarget")
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

    async def _expire(self, job: dict, *, now: datetime) -> None:
        """ttlSecondsAfterFinished: deletes the finished Job once its time has come, or
        schedules a look at that time."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        status = job.get("status") or {}
        finished_at = status.get("completionTime") or _condition(status.get("conditions") or [], "Failed")["lastTransitionTime"]
        remaining = (parse_time(finished_at) - now).total_seconds() + ttl
        if remaining > 0:
            self._wake_later(_key(job), seconds=remaining)
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
