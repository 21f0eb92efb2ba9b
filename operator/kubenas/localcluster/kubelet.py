"""The process kubelet: a Node whose pods are local processes. The one part of the local
cluster that kubenas writes itself, since there is no container runtime here.

What it does:
- Registers a Node with capacity for cpu, memory, pods and `nvidia.com/gpu` (what the
  real scheduler sees; the processes share this machine), keeps it Ready with Lease
  renewals every 10 s, and serves `kubectl logs` on an HTTPS port that trusts only
  client certificates of the cluster's CA.
- Runs the first container of each pod the scheduler binds to it, as a process
  (kubenas.localcluster.launch, .sandbox, .volumes): `command` and `args` with `$(VAR)`
  expansion, `env` and `envFrom` (values, fieldRef, configMap and secret keys),
  `workingDir`; emptyDir, hostPath, persistentVolumeClaim (a folder per claim),
  configMap, secret, downwardAPI and projected volumes (service-account tokens from the
  TokenRequest API, renewed at 80 % of their life) bind-mounted at their mountPath in
  the pod's own mount namespace; an image map for containers that name no command.
- Reports Pod status as a kubelet does: Running, then `terminated` with exitCode,
  reason, message (terminationMessagePath, at most 4,096 bytes; FallbackToLogsOnError),
  startedAt and finishedAt; then the phase. restartPolicy OnFailure and Always restart
  the container with a short back-off.
- Deletion: SIGTERM to the container's process group, SIGKILL after the grace period,
  then the final status and the pod's removal (DELETE with grace period 0).
- Enforces activeDeadlineSeconds (reason DeadlineExceeded) and the memory limit in a
  memory cgroup, whose OOM kill ends the container with reason OOMKilled.
- A restarted kubelet fails the pods its predecessor ran (their processes died with it)
  with ContainerStatusUnknown, as a kubelet does for a container it cannot find.

What it does not do: pull or unpack images (the image is this machine: `python` is the
kubelet's interpreter), run init, sidecar or further containers, switch to runAsUser or
apply seccomp and capabilities (processes run as the kubelet's user: mount namespaces
need root; each mount point is created, empty, on the host as bind mounts need), probes, CPU limits, GPU device assignment, networking (every pod has IP
127.0.0.1, and Services do not route), Events, or static pods.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from kubenas.localcluster.client import STRATEGIC_MERGE_PATCH, ApiError, Client
from kubenas.localcluster.kubelet_logs import LogServer
from kubenas.localcluster.kubelet_node import Node
from kubenas.localcluster.kubelet_processes import Process, grace_period, termination_message
from kubenas.localcluster.launch import IMAGE_PATHS, ImageMap, Launch, memory_limit_bytes, prepare
from kubenas.localcluster.podstatus import TERMINAL_PHASES, StatusReport, now, unknown_status
from kubenas.localcluster.sandbox import MemoryCgroup, enter, prepare_targets
from kubenas.localcluster.volumes import ContainerConfigError, Volumes, materialize

RESTART_BACKOFF_SECONDS = (0.1, 2.0)  # first delay, cap
CONFIG_RETRY_SECONDS = (1.0, 10.0)  # CreateContainerConfigError: first delay, cap
STATUS_RETRY_SECONDS = (0.2, 5.0)  # a status write's back-off while the API server is away
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"

log = logging.getLogger("kubenas.kubelet")


@dataclass
class PodRun:
    pod: dict
    deletion: asyncio.Future  # resolved with the pod as deleted
    task: asyncio.Task | None = None
    process: Process | None = None
    log_path: Path | None = None

    def delete(self, pod: dict) -> None:
        if not self.deletion.done():
            self.deletion.set_result(pod)


@dataclass
class Kubelet:
    client: Client
    node_name: str
    workdir: Path
    port: int
    capacity: dict[str, str]
    images: ImageMap
    runs: dict[str, PodRun] = field(default_factory=dict)  # by pod uid, while its task lives
    taken: set[str] = field(default_factory=set)  # uids of pods this kubelet took on
    removing: set[str] = field(default_factory=set)  # uids of deleted pods whose removal is under way

    @property
    def api(self) -> tuple[str, int]:
        parsed = urllib.parse.urlsplit(self.client.server)
        return parsed.hostname or "127.0.0.1", parsed.port or 443

    async def run(self) -> None:
        node = Node(client=self.client, name=self.node_name, port=self.port, capacity=self.capacity)
        await node.register()
        await self._recover()
        await asyncio.gather(node.renew_lease(), node.report_status(), self._watch_pods())

    # -- pods ------------------------------------------------------------------------

    async def _list_pods(self) -> tuple[list[dict], str]:
        answer = await self.client.request("GET", "/api/v1/pods", params={"fieldSelector": f"spec.nodeName={self.node_name}"})
        return answer["items"], answer["metadata"]["resourceVersion"]

    async def _recover(self) -> None:
        """Pods this node ran before this kubelet started: their processes are gone."""
        pods, _ = await self._list_pods()
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if phase in TERMINAL_PHASES:
                continue
            with contextlib.suppress(ApiError):
                if phase == "Running" or pod["metadata"].get("deletionTimestamp"):
                    await self._write(pod, unknown_status(pod))
                    self.taken.add(pod["metadata"]["uid"])
                if pod["metadata"].get("deletionTimestamp"):
                    await self._remove(pod)

    async def _watch_pods(self) -> None:
        """List, then watch from the list's resourceVersion; list again when the watch ends
        or expires (410 Gone)."""
        while True:
            try:
                pods, version = await self._list_pods()
                present = {pod["metadata"]["uid"] for pod in pods}
                for uid, run in list(self.runs.items()):
                    if uid not in present:
                        run.delete(run.pod)
                self.taken &= present
                self.removing &= present
                for pod in pods:
                    self._on_pod("ADDED", pod)
                params = {"fieldSelector": f"spec.nodeName={self.node_name}", "resourceVersion": version,
                          "timeoutSeconds": "300"}
                async for event in self.client.watch("/api/v1/pods", params=params):
                    if event["type"] != "BOOKMARK":
                        self._on_pod(event["type"], event["object"])
            except (ApiError, OSError, asyncio.TimeoutError, ValueError) as error:
                log.info("pod watch ended (%s): listing again", error)
                await asyncio.sleep(0.5)

    def _on_pod(self, kind: str, pod: dict) -> None:
        metadata = pod["metadata"]
        uid = metadata["uid"]
        if kind == "DELETED":
            if uid in self.runs:
                self.runs[uid].delete(pod)
            self.taken.discard(uid)
            return
        if metadata.get("deletionTimestamp"):
            if uid in self.runs:
                self.runs[uid].delete(pod)  # its task stops the process, then removes the pod
            elif uid not in self.removing:
                self.removing.add(uid)  # nothing runs it (finished, or never started): confirm the deletion
                asyncio.create_task(self._remove(pod))
            self.taken.add(uid)
            return
        if uid in self.taken:
            return
        self.taken.add(uid)
        if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return
        run = PodRun(pod=pod, deletion=asyncio.get_running_loop().create_future())
        self.runs[uid] = run
        run.task = asyncio.create_task(self._run_pod(run), name=f"pod {metadata['namespace']}/{metadata['name']}")

    async def _run_pod(self, run: PodRun) -> None:
        pod = run.pod
        metadata = pod["metadata"]
        try:
            await self._live(run)
            if run.deletion.done():
                await self._remove(pod)
        except ApiError as error:
            if error.status != 404:
                log.warning("pod %s/%s: %s", metadata["namespace"], metadata["name"], error)
        except Exception:
            log.exception("pod %s/%s: the kubelet failed to run it", metadata["namespace"], metadata["name"])
        finally:
            if run.process is not None:
                run.process.kill()
            self.runs.pop(metadata["uid"], None)

    async def _live(self, run: PodRun) -> None:
        """A pod's life on this node: volumes, the container's runs, the end."""
        pod = run.pod
        report = StatusReport(pod=pod, start_time=now())
        await self._write(pod, report.build(phase="Pending", state={"waiting": {"reason": "ContainerCreating"}}))
        sandbox = self.workdir / "pods" / pod["metadata"]["uid"]
        refresher = None
        prepared = await self._set_up(run, report, sandbox)
        if prepared is None:
            await self._write(pod, report.build(phase="Failed", state={"terminated": {
                "exitCode": 137, "reason": "ContainerStatusUnknown", "message": "The pod was deleted before its container started"}}))
            return
        volumes, launch = prepared
        if volumes.refresh_after is not None:
            refresher = asyncio.create_task(self._refresh_volumes(pod, sandbox, volumes.refresh_after))
        try:
            await self._run_until_done(run, report, launch)
        finally:
            if refresher is not None:
                refresher.cancel()

    async def _set_up(self, run: PodRun, report: StatusReport, sandbox: Path) -> tuple[Volumes, Launch] | None:
        """Volumes and the launch; on CreateContainerConfigError the pod stays Pending and,
        as on a real node, set-up is tried again with a back-off (a ConfigMap, Secret or
        token may appear) until it works or the pod is deleted (None)."""
        host, port = self.api
        delay, reported = CONFIG_RETRY_SECONDS[0], None
        while not run.deletion.done():
            try:
                volumes = await materialize(run.pod, client=self.client, sandbox=sandbox, claims=self.workdir / "claims")
                launch = await prepare(run.pod, client=self.client, images=self.images, volumes=volumes.paths,
                                       sandbox=sandbox, api_host=host, api_port=port)
                prepare_targets(launch.mounts)
                return volumes, launch
            except (ContainerConfigError, OSError, ValueError) as error:
                if str(error) != reported:
                    reported = str(error)
                    waiting = {"reason": "CreateContainerConfigError", "message": reported}
                    await self._write(run.pod, report.build(phase="Pending", state={"waiting": waiting}))
                await asyncio.wait([run.deletion], timeout=delay)
                delay = min(2 * delay, CONFIG_RETRY_SECONDS[1])
        return None

    async def _refresh_volumes(self, pod: dict, sandbox: Path, after: float) -> None:
        while True:
            await asyncio.sleep(after)
            with contextlib.suppress(ContainerConfigError, ApiError, OSError):
                await materialize(pod, client=self.client, sandbox=sandbox, claims=self.workdir / "claims")

    async def _run_until_done(self, run: PodRun, report: StatusReport, launch: Launch) -> None:
        """Runs the container, again as restartPolicy says, until it ends, the pod is
        deleted or its activeDeadlineSeconds pass; then reports the pod's end."""
        pod = run.pod
        restart_policy = pod["spec"].get("restartPolicy", "Always")
        deadline = pod["spec"].get("activeDeadlineSeconds")
        expiry = asyncio.get_running_loop().time() + deadline if deadline is not None else None
        reason = message = None
        while True:
            terminated, expired = await self._run_container(run, report, launch, expiry=expiry)
            failed = terminated["exitCode"] != 0
            if expired:
                reason, message, failed = "DeadlineExceeded", DEADLINE_MESSAGE, True
                break
            if run.deletion.done() or not (restart_policy == "Always" or (restart_policy == "OnFailure" and failed)):
                break
            report.last_state = {"terminated": terminated}
            report.restart_count += 1
            first, cap = RESTART_BACKOFF_SECONDS
            delay = min(first * 2 ** (report.restart_count - 1), cap)
            name = pod["spec"]["containers"][0]["name"]
            waiting = {"reason": "CrashLoopBackOff",
                       "message": f"back-off {delay:g}s restarting failed container={name} pod={pod['metadata']['name']}"}
            await self._write(pod, report.build(phase="Running", state={"waiting": waiting}))
            await asyncio.wait([run.deletion], timeout=delay)
            if run.deletion.done():
                break
        phase = "Failed" if failed else "Succeeded"
        await self._write(pod, report.build(phase=phase, state={"terminated": terminated}, reason=reason, message=message))

    async def _run_container(self, run: PodRun, report: StatusReport, launch: Launch, *,
                             expiry: float | None) -> tuple[dict, bool]:
        """Runs the container once: its `terminated` state, and whether the deadline ended it."""
        pod = run.pod
        container = pod["spec"]["containers"][0]
        container_id = report.container_id = f"process://{secrets.token_hex(16)}"
        log_dir = self.log_dir(pod["metadata"]) / container["name"]
        log_dir.mkdir(parents=True, exist_ok=True)
        run.log_path = log_dir / f"{report.restart_count}.log"
        launch.termination_message_file.write_bytes(b"")  # each instance starts with an empty one
        started_at = now()
        limit = memory_limit_bytes(container)
        cgroup = MemoryCgroup.create(f"kubenas-{pod['metadata']['uid']}-{report.restart_count}", limit) if limit else None
        try:
            with open(run.log_path, "wb") as log_file:
                popen = subprocess.Popen(
                    launch.argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=launch.env,
                    start_new_session=True,
                    preexec_fn=lambda: enter(mounts=launch.mounts, cgroup_procs=cgroup.procs if cgroup else None,
                                             working_dir=launch.working_dir, image_paths=IMAGE_PATHS),
                )
        except (OSError, subprocess.SubprocessError) as error:
            if cgroup:
                cgroup.remove()
            return {"exitCode": 128, "reason": "StartError", "containerID": container_id,
                    "message": f"failed to start container {container['name']!r}: {launch.argv[0]!r}: {error}",
                    "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now()}, False
        process = run.process = Process(popen)
        await self._write(pod, report.build(phase="Running", state={"running": {"startedAt": started_at}}))
        timeout = None if expiry is None else max(0.0, expiry - asyncio.get_running_loop().time())
        await asyncio.wait([process.exit_status, run.deletion], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        expired = not process.exit_status.done() and not run.deletion.done()
        if not process.exit_status.done():
            process.signal_group(signal.SIGTERM)
            await asyncio.wait([process.exit_status], timeout=grace_period(run.deletion.result() if run.deletion.done() else pod))
            process.signal_group(signal.SIGKILL)
        status = await process.exit_status
        run.process = None
        exit_code = status if status >= 0 else 128 - status
        oom = cgroup is not None and cgroup.oom_killed()
        if cgroup:
            cgroup.remove()
        terminated = {"exitCode": exit_code, "reason": "OOMKilled" if oom else ("Completed" if exit_code == 0 else "Error"),
                      "startedAt": started_at, "finishedAt": now(), "containerID": container_id}
        fallback = container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code != 0
        message = termination_message(launch.termination_message_file, run.log_path, fallback_to_logs=fallback)
        if message:
            terminated["message"] = message
        return terminated, expired

    async def _write(self, pod: dict, status: dict) -> None:
        """The pod's status, written until the API server takes it: as a real kubelet's
        status manager does, an API server restarting (refused connections, 5xx, 429)
        delays the write; it never loses it (a lost "Succeeded" would leave the pod
        Running for ever)."""
        metadata = pod["metadata"]
        delay = STATUS_RETRY_SECONDS[0]
        while True:
            try:
                await self.client.request(
                    "PATCH", f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}/status",
                    body={"metadata": {"uid": metadata["uid"]}, "status": status}, content_type=STRATEGIC_MERGE_PATCH)
                return
            except ApiError as error:
                if error.status not in (429, 500, 502, 503, 504):
                    raise
                why = str(error)
            except (OSError, asyncio.TimeoutError) as error:
                why = repr(error)
            log.info("pod %s/%s: status write failed (%s): again in %.1f s", metadata["namespace"], metadata["name"],
                     why, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, STATUS_RETRY_SECONDS[1])

    async def _remove(self, pod: dict) -> None:
        """Ends a deleted pod's graceful deletion, as the kubelet does once its containers stopped."""
        metadata = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.client.request("DELETE", f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}",
                                      body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                            "preconditions": {"uid": metadata["uid"]}})

    def log_dir(self, metadata: dict) -> Path:
        return self.workdir / "logs" / f"{metadata['namespace']}_{metadata['name']}_{metadata['uid']}"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kubenas.localcluster.kubelet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the node's credentials (CN system:node:NAME)")
    parser.add_argument("--node-name", default="kubenas-dev")
    parser.add_argument("--workdir", type=Path, required=True, help="pods' volumes and logs")
    parser.add_argument("--port", type=int, required=True, help="the HTTPS port for logs")
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--client-ca", required=True, help="CA of the API server's client certificate")
    parser.add_argument("--cpu", default="64")
    parser.add_argument("--memory", default="64Gi")
    parser.add_argument("--pods", type=int, default=250)
    parser.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu capacity (default: %(default)s)")
    parser.add_argument("--image-map", type=Path, help="YAML: images -> local commands (see kubenas.localcluster.launch)")
    return parser.parse_args()


async def _main(args: argparse.Namespace) -> None:
    client = Client(args.kubeconfig)
    capacity = {"cpu": args.cpu, "memory": args.memory, "pods": str(args.pods), "nvidia.com/gpu": str(args.gpus),
                "ephemeral-storage": "100Gi"}
    kubelet = Kubelet(client=client, node_name=args.node_name, workdir=args.workdir, port=args.port, capacity=capacity,
                      images=ImageMap.load(args.image_map))
    logs = LogServer(kubelet=kubelet, port=args.port, cert=args.tls_cert, key=args.tls_key, client_ca=args.client_ca)
    await logs.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running = asyncio.create_task(kubelet.run())
    await asyncio.wait([running, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        running.result()  # a failed registration: raise it
    for run in list(kubelet.runs.values()):
        if run.process is not None:
            run.process.kill()
    running.cancel()
    await logs.stop()
    await client.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _arguments()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
