"""The emulated cluster's node: a fake kubelet that binds every unscheduled Pod to itself
and runs it as local processes, reporting Pod status as a real kubelet does.

What a container is here:

- The image is this machine. Only the first container runs, as a subprocess: `command`
  + `args` after `$(VAR)` expansion; `python`/`python3` as the first word mean this
  interpreter (sys.executable); a container without a command runs the trainer image's
  entrypoint, `python -m kubenas_trainer`. Init containers and further containers are not
  run, and the pod's `status.message` says so.
- Filesystem: there is no mount namespace, so container paths map onto host paths. Each
  pod gets a sandbox WORKDIR/pods/<pod uid>; its terminationMessagePath (default
  /dev/termination-log) maps to a file there, and each volumeMounts[].mountPath to its
  volume: emptyDir → <sandbox>/volumes/<volume>, hostPath → that host path,
  persistentVolumeClaim → WORKDIR/claims/<namespace>/<claim> (shared by the claim's
  pods), other kinds (configMap, secret, ...) → an empty <sandbox>/volumes/<volume>.
  **Every env value and argument that equals such a container path, or starts with it
  followed by "/", is rewritten to the host path; so is the value of an `--option=PATH`
  argument.** Paths a program builds itself are not rewritten. workingDir maps the same
  way; one outside the mounts is used as is when this machine has it, else created in the
  sandbox; without workingDir the container starts in the kubelet's working directory.
- Environment: the kubelet's own, then HOSTNAME (the pod's name), OMP_NUM_THREADS and
  MKL_NUM_THREADS (the container's CPU limit, else request, rounded up, else 1, so many
  children do not oversubscribe the cores), PYTHONUNBUFFERED=1 (logs are live), then the
  container's `env`: `value` with `$(VAR)` expansion, `valueFrom.fieldRef`.
- Processes: each container instance runs in a new session whose process group is "the
  container": the whole group is killed when the main process exits, when the pod is
  deleted (SIGTERM, then SIGKILL after the deletion's grace period, else
  terminationGracePeriodSeconds, default 30, capped at 2 s here) and when the kubelet
  closes; PR_SET_PDEATHSIG kills it with the kubelet's process. Processes start with
  subprocess.Popen and their exits are awaited through pidfds on the event loop:
  asyncio.create_subprocess_exec would, on Python 3.11, wait on one thread per child.
- Logs: stdout and stderr of each container instance go to
  WORKDIR/logs/<namespace>_<pod>_<uid>/<container>/<restartCount>.log; read_log serves
  the current instance's.
- Restarts: restartPolicy OnFailure (and Always) restart the container in place, with a
  CrashLoopBackOff delay shortened to 0.1 s doubling up to 2 s.
- A kubelet that finds pods Running (or being deleted) on its node with no process of
  its own (a previous kubelet and its children are gone) fails them as a lost node's
  pods are failed: phase Failed, reason NodeLost, a DisruptionTarget condition, the
  container terminated with ContainerStatusUnknown and exit code 137.

Not emulated: OOMKilled (no memory limit is enforced), probes (a running container is
ready), image pulls, init and sidecar containers, configMap/secret env and volume
contents, Events.

Modules: kubenas.testing.kubelet_launch maps the container onto this machine (command,
environment, paths), kubenas.testing.kubelet_processes starts, awaits and kills its
processes, kubenas.testing.kubelet_status builds the Pod status; this one runs the pods.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

from kubenas.testing.contract import ApiError, ObjectStore
from kubenas.testing.jobs_status import rfc3339, utc_now
from kubenas.testing.kubelet_launch import ContainerConfigError, Launch, prepare
from kubenas.testing.kubelet_processes import Process, grace_period, start_process, termination_message
from kubenas.testing.kubelet_status import TERMINAL_PHASES, StatusReport, lost_status

PODS = "v1/pods"
RESTART_BACKOFF_SECONDS = (0.1, 2.0)  # first delay, cap

log = logging.getLogger(__name__)


@dataclass
class _PodRun:
    """A pod this kubelet runs."""

    pod: dict  # as first seen
    deletion: asyncio.Future[dict]  # resolved with the pod as deleted
    task: asyncio.Task | None = None
    process: Process | None = None

    def delete(self, pod: dict) -> None:
        if not self.deletion.done():
            self.deletion.set_result(pod)


class Kubelet:
    """The emulated cluster's only node: binds unscheduled pods and runs them locally."""

    def __init__(self, *, store: ObjectStore, workdir: Path, node_name: str = "kubenas-dev") -> None:
        self._store = store
        self._workdir = Path(workdir)
        self._node_name = node_name
        self._runs: dict[str, _PodRun] = {}  # by pod uid, while its task lives
        self._taken: set[str] = set()  # uids of the pods this kubelet took on, finished ones too
        self._stop = asyncio.Event()
        self._running: asyncio.Task | None = None

    async def run(self) -> None:
        """Runs pods until close(), cancellation, or the store closing its watch; then
        kills their processes (the node is gone, their status stays as it was)."""
        self._running = asyncio.current_task()
        watch = asyncio.create_task(self._watch_pods())
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([watch, stop], return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                watch.result()
        finally:
            watch.cancel()
            stop.cancel()
            await asyncio.gather(watch, stop, return_exceptions=True)
            runs = list(self._runs.values())
            for run in runs:
                if run.task is not None:
                    run.task.cancel()  # first, so no status is written for the killed processes
                if run.process is not None:
                    run.process.kill()
            await asyncio.gather(*(run.task for run in runs if run.task is not None), return_exceptions=True)

    async def close(self) -> None:
        self._stop.set()
        if self._running is not None and self._running is not asyncio.current_task():
            await asyncio.wait([self._running])

    def read_log(self, *, namespace: str, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        pod = self._store.get(PODS, namespace=namespace, name=name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container is None:
            if len(names) > 1:
                raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]")
            container = names[0]
        elif container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        log_dir = self._log_dir(pod["metadata"]) / container
        instances = sorted(log_dir.glob("*.log"), key=lambda path: int(path.stem))
        if not instances:
            waiting = "ContainerCreating" if container == names[0] else "not run by the kubenas emulator"
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {waiting}')
        text = instances[-1].read_text(errors="replace")
        if tail_lines is not None:
            text = "".join(text.splitlines(keepends=True)[-tail_lines:]) if tail_lines > 0 else ""
        return text

    async def _watch_pods(self) -> None:
        """List, then watch from the list's resourceVersion; relist when the watch expires
        (410 Gone: too far behind), stopping the runs of pods deleted meanwhile."""
        while True:
            pods, version = self._store.list(PODS)
            present = {pod["metadata"]["uid"]: pod for pod in pods}
            for uid, run in list(self._runs.items()):
                if uid not in present:
                    run.delete(run.pod)
            self._taken &= present.keys()
            for pod in pods:
                await self._on_pod_event("ADDED", pod)
            try:
                async for event in self._store.watch(PODS, resource_version=version):
                    await self._on_pod_event(event["type"], event["object"])
                return  # the store closed
            except ApiError as error:
                if error.status != 410:
                    raise
                log.info("pod watch expired (%s): relisting", error.message)

    async def _on_pod_event(self, kind: str, pod: dict) -> None:
        metadata = pod["metadata"]
        uid = metadata["uid"]
        if kind == "DELETED" or metadata.get("deletionTimestamp"):
            if uid in self._runs:
                self._runs[uid].delete(pod)
            if kind == "DELETED":
                self._taken.discard(uid)
                return
        node = pod["spec"].get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if uid in self._taken or node not in (None, self._node_name) or phase in TERMINAL_PHASES:
            return
        self._taken.add(uid)
        if node is not None and (phase == "Running" or metadata.get("deletionTimestamp")):
            await self._fail_lost(pod)  # a previous kubelet's: no process of ours runs it
            return
        if metadata.get("deletionTimestamp"):
            return  # deleted before it was bound: nothing ever ran
        run = _PodRun(pod=pod, deletion=asyncio.get_running_loop().create_future())
        self._runs[uid] = run
        run.task = asyncio.create_task(self._run_pod(pod, run), name=f"pod {metadata['namespace']}/{metadata['name']}")

    async def _run_pod(self, pod: dict, run: _PodRun) -> None:
        metadata = pod["metadata"]
        try:
            await self._live(pod, run)
        except ApiError as error:
            if error.status != 404:  # 404: the pod is gone, and so must its process be
                log.warning("pod %s/%s: %s", metadata["namespace"], metadata["name"], error)
        except Exception:
            log.exception("pod %s/%s: the kubelet failed to run it", metadata["namespace"], metadata["name"])
        finally:
            if run.process is not None:
                run.process.kill()
            self._runs.pop(metadata["uid"], None)

    async def _live(self, pod: dict, run: _PodRun) -> None:
        """A pod's life on this node: binding, preparation, the container's runs, the end."""
        if pod["spec"].get("nodeName") is None:
            pod = await self._store.patch(
                PODS, namespace=pod["metadata"]["namespace"], name=pod["metadata"]["name"],
                patch={"spec": {"nodeName": self._node_name}},
            )
        report = StatusReport(pod=pod, start_time=rfc3339(utc_now()))
        await self._write(pod, report.build(phase="Pending", state={"waiting": {"reason": "ContainerCreating"}}))
        try:
            launch = prepare(pod, workdir=self._workdir, pod_log_dir=self._log_dir(pod["metadata"]))
        except ContainerConfigError as error:
            # As on a real node, the pod stays Pending until it is deleted.
            await self._write(pod, report.build(phase="Pending", state={"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}))
            await run.deletion
        else:
            if not run.deletion.done():
                await self._run_until_done(pod, run, report, launch)
                return
        never_started = {"exitCode": 137, "reason": "ContainerStatusUnknown", "message": "The pod was deleted before its container started"}
        await self._write(pod, report.build(phase="Failed", state={"terminated": never_started}))

    async def _run_until_done(self, pod: dict, run: _PodRun, report: StatusReport, launch: Launch) -> None:
        """Runs the container, again as its restartPolicy says, then reports the pod's end."""
        restart_policy = pod["spec"].get("restartPolicy", "Always")
        while True:
            terminated = await self._run_container(pod, run, report, launch)
            failed = terminated["exitCode"] != 0
            if run.deletion.done() or not (restart_policy == "Always" or (restart_policy == "OnFailure" and failed)):
                break
            report.last_state = {"terminated": terminated}
            report.restart_count += 1
            first, cap = RESTART_BACKOFF_SECONDS
            delay = min(first * 2 ** (report.restart_count - 1), cap)
            name = pod["spec"]["containers"][0]["name"]
            waiting = {"reason": "CrashLoopBackOff", "message": f"back-off {delay:g}s restarting failed container={name} pod={pod['metadata']['name']}"}
            await self._write(pod, report.build(phase="Running", state={"waiting": waiting}))
            await asyncio.wait([run.deletion], timeout=delay)
            if run.deletion.done():
                break
        await self._write(pod, report.build(phase="Failed" if failed else "Succeeded", state={"terminated": terminated}))

    async def _run_container(self, pod: dict, run: _PodRun, report: StatusReport, launch: Launch) -> dict:
        """Runs the container once; returns its `terminated` state."""
        container = pod["spec"]["containers"][0]
        container_id = report.container_id = f"containerd://{secrets.token_hex(32)}"
        launch.termination_message_file.write_bytes(b"")  # each instance starts with an empty one
        log_path = launch.log_dir / f"{report.restart_count}.log"
        started_at = rfc3339(utc_now())
        try:
            popen = start_process(launch.argv, env=launch.env, cwd=launch.cwd, log_path=log_path)
        except OSError as error:
            return {
                "exitCode": 128, "reason": "StartError", "containerID": container_id,
                "message": f"failed to start container {container['name']!r}: exec: {launch.argv[0]!r}: {error.strerror}",
                "startedAt": "1970-01-01T00:00:00Z", "finishedAt": rfc3339(utc_now()),  # as containerd reports it
            }
        process = run.process = Process(popen)
        await self._write(pod, report.build(phase="Running", state={"running": {"startedAt": started_at}}))
        await asyncio.wait([process.exit_status, run.deletion], return_when=asyncio.FIRST_COMPLETED)
        if not process.exit_status.done():
            process.signal_group(signal.SIGTERM)
            await asyncio.wait([process.exit_status], timeout=grace_period(run.deletion.result()))
            process.signal_group(signal.SIGKILL)
        status = await process.exit_status
        run.process = None
        exit_code = status if status >= 0 else 128 - status
        terminated = {
            "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started_at, "finishedAt": rfc3339(utc_now()), "containerID": container_id,
        }
        if status < 0:
            terminated["signal"] = -status
        fallback = container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code != 0
        message = termination_message(launch.termination_message_file, log_path, fallback_to_logs=fallback)
        if message:
            terminated["message"] = message
        return terminated

    async def _fail_lost(self, pod: dict) -> None:
        """Fails a pod that a previous kubelet ran or was to run: its processes, if any, died
        with that kubelet."""
        metadata = pod["metadata"]
        lost = lost_status(pod, node_name=self._node_name)
        try:
            await self._write(pod, lost)
        except ApiError as error:
            if error.status != 404:
                log.warning("pod %s/%s: cannot mark it lost: %s", metadata["namespace"], metadata["name"], error)

    async def _write(self, pod: dict, status: dict) -> None:
        metadata = pod["metadata"]
        await self._store.patch(PODS, namespace=metadata["namespace"], name=metadata["name"], patch={"status": status}, subresource="status")

    def _log_dir(self, metadata: dict) -> Path:
        return self._workdir / "logs" / f"{metadata['namespace']}_{metadata['name']}_{metadata['uid']}"
