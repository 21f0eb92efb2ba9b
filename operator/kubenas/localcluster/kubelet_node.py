"""The process kubelet's Node: registered with its capacity (cpu, memory, pods,
`nvidia.com/gpu`), kept Ready by renewing its Lease in kube-node-lease every 10 s (the
node-lifecycle controller marks a node whose Lease lapses NotReady), its status posted
every minute."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from dataclasses import dataclass

from kubenas.localcluster import binaries
from kubenas.localcluster.client import STRATEGIC_MERGE_PATCH, ApiError, Client
from kubenas.localcluster.podstatus import NODE_IP, now

LEASE_SECONDS = 40
RENEW_SECONDS = 10

log = logging.getLogger("kubenas.kubelet")


@dataclass
class Node:
    client: Client
    name: str
    port: int  # the kubelet's HTTPS port (logs)
    capacity: dict[str, str]

    def status(self) -> dict:
        stamp = now()
        conditions = [
            {"type": kind, "status": "False", "reason": f"KubeletHas{reason}", "message": f"kubelet has {reason.lower()}"}
            for kind, reason in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                                 ("PIDPressure", "SufficientPID"))
        ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]
        for condition in conditions:
            condition.update(lastHeartbeatTime=stamp, lastTransitionTime=stamp)
        return {
            "capacity": self.capacity, "allocatable": self.capacity, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                "osImage": "kubenas process kubelet", "containerRuntimeVersion": "process://0.1.0",
                "kubeletVersion": binaries.KUBERNETES_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            },
        }

    async def register(self) -> None:
        arch = self.status()["nodeInfo"]["architecture"]
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
                  "node.kubernetes.io/instance-type": "kubenas-process"}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels},
                "status": self.status()}
        try:
            await self.client.request("POST", "/api/v1/nodes", body=body)
        except ApiError as error:
            if error.status != 409:
                raise
        await self._patch_status()

    async def _patch_status(self) -> None:
        await self.client.request("PATCH", f"/api/v1/nodes/{self.name}/status", body={"status": self.status()},
                                  content_type=STRATEGIC_MERGE_PATCH)

    async def report_status(self) -> None:
        while True:
            await asyncio.sleep(60)
            with contextlib.suppress(ApiError, OSError, asyncio.TimeoutError):
                await self._patch_status()

    async def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        while True:
            renew = now().replace("Z", ".000000Z")
            try:
                if await self.client.get(path) is None:
                    await self.client.request("POST", path.rsplit("/", 1)[0], body={
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name},
                        "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew}})
                else:
                    await self.client.request("PATCH", path, body={"spec": {"renewTime": renew}},
                                              content_type="application/merge-patch+json")
            except (ApiError, OSError, asyncio.TimeoutError) as error:
                log.warning("lease renewal failed: %s", error)
            await asyncio.sleep(RENEW_SECONDS)
