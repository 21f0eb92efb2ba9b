"""Why Kueue has not admitted a queued child yet, in Kueue's own words.

A child's suspended Job says only that it waits. Kueue's verdict is on the Workload it
made of the Job: its `QuotaReserved` condition, False with reason `Pending` ("couldn't
assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor
default, 1 more needed") or `Inadmissible` ("LocalQueue gpus doesn't exist": no child
of this search will ever run until someone creates it). The driver copies that reason
and message into the queued child's NASTrial.

While children are queued, the namespace's Workloads are listed at most every
`LIST_EVERY` seconds: one request, however many children wait. Reading them needs only
`list` on `workloads.kueue.x-k8s.io`; where that is refused, or Kueue is not installed,
the operator stops asking and the children keep the Job's own message.
"""

from __future__ import annotations

import logging
import time

from kubenas.operator.kube import ApiError, KubeClient
from kubenas.operator.names import Resource
from kubenas.operator.queueing import AWAITING_ADMISSION

LIST_EVERY = 5.0
# Kueue serves v1beta2 from v0.15 (v1beta1 alongside it for a while, before that alone).
VERSIONS = ("v1beta2", "v1beta1")
INADMISSIBLE = "Inadmissible"
AWAITING = AWAITING_ADMISSION


def workloads(version: str) -> Resource:
    return Resource("kueue.x-k8s.io", version, "workloads", "Workload")


def verdict(workload: dict) -> tuple[str, str] | None:
    """(reason, message) for a child whose Workload has no quota yet; None once it has
    (admission follows, and the Job then says so itself)."""
    conditions = (workload.get("status") or {}).get("conditions") or []
    reserved = next((c for c in conditions if c.get("type") == "QuotaReserved"), None)
    if reserved is None or reserved.get("status") == "True" or not reserved.get("message"):
        return None
    reason = INADMISSIBLE if reserved.get("reason") == INADMISSIBLE else AWAITING
    return reason, f"Kueue: {str(reserved['message'])[:1000]}"


def job_of(workload: dict) -> str | None:
    """The name of the Job the Workload stands for (its controller owner)."""
    for owner in (workload.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "Job" and owner.get("apiVersion", "").startswith("batch/"):
            return owner.get("name")
    return None


class KueueVerdicts:
    """Kueue's reasons for the queued children of one search, read on a timer."""

    def __init__(self, *, logger: logging.Logger | logging.LoggerAdapter, clock=time.monotonic) -> None:
        self.logger = logger
        self.clock = clock
        self.versions = list(VERSIONS)
        self.last_list: float | None = None
        self.disabled = False

    def due(self) -> bool:
        return not self.disabled and (self.last_list is None or self.clock() - self.last_list >= LIST_EVERY)

    async def read(self, client: KubeClient, *, namespace: str, jobs: set[str]) -> dict[str, tuple[str, str]]:
        """Job name -> (reason, message), for the Jobs in `jobs` whose Workload waits."""
        self.last_list = self.clock()
        while self.versions:
            try:
                items = await client.list(workloads(self.versions[0]), namespace=namespace, label_selector="")
                break
            except ApiError as error:
                if error.status == 404 and len(self.versions) > 1:
                    self.versions.pop(0)  # an older Kueue: its earlier version
                    continue
                if error.status in (403, 404):
                    self.disabled = True  # no RBAC on Workloads, or no Kueue: the Job's own message stays
                    self.logger.info(f"Kueue's Workloads cannot be read ({error.status} {error.reason}); "
                                     "queued children show only that their Job waits")
                    return {}
                raise
        found = {}
        for workload in items:
            job = job_of(workload)
            if job in jobs and (said := verdict(workload)) is not None:
                found[job] = said
        return found
