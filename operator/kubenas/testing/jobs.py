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

This module watches Jobs and Pods and queues the Jobs to reconcile;
kubenas.testing.jobs_reconciler reconciles one Job, and kubenas.testing.jobs_status holds
the pure part (conditions, the tally of finished pods, the failure checks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kubenas.testing.contract import ApiError, ObjectStore
from kubenas.testing.jobs_reconciler import JOBS, PODS, JobReconciler
from kubenas.testing.jobs_status import JobKey, job_key, job_owner

log = logging.getLogger(__name__)


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
        self._reconciler = JobReconciler(store=store, wake_later=self._wake_later)

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
        await self._follow(JOBS, lambda job: self._enqueue(job_key(job)))

    async def _watch_pods(self) -> None:
        def enqueue_owner(pod: dict) -> None:
            owner = job_owner(pod)
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
                await self._reconciler.sync(key)
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
