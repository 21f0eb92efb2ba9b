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
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import re
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kubenas.testing.contract import ApiError, ObjectStore
from kubenas.testing.jobs import rfc3339, utc_now

PODS = "v1/pods"
TERMINAL_PHASES = ("Succeeded", "Failed")
NODE_IP = "127.0.0.1"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE_BYTES = 4096  # what the kubelet keeps of the file
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: the log's last 80 lines, at most 2 KiB
FALLBACK_LOG_BYTES = 2048
GRACE_PERIOD_CAP_SECONDS = 2.0
RESTART_BACKOFF_SECONDS = (0.1, 2.0)  # first delay, cap
_VARIABLE_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_LABEL_OR_ANNOTATION = re.compile(r"metadata\.(labels|annotations)\['([^']*)'\]")

log = logging.getLogger(__name__)


class ContainerConfigError(Exception):
    """The container cannot be created as specified (the kubelet's CreateContainerConfigError)."""


def _die_with_kubelet() -> None:
    """Runs in the child before exec: SIGKILL when the kubelet's thread dies (Linux)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Process:
    """A started container instance: its process group and the future of its exit status
    (negative: killed by that signal), resolved through a pidfd rather than a thread."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process
        self._loop = asyncio.get_running_loop()
        self.exit_status: asyncio.Future[int] = self._loop.create_future()
        self._pidfd = os.pidfd_open(process.pid)
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        self._forget_pidfd()
        self.exit_status.set_result(self._process.wait())
        self.signal_group(signal.SIGKILL)  # the container's other processes die with its main one

    def _forget_pidfd(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def kill(self) -> None:
        """At once, for a closing kubelet."""
        if self.exit_status.done():
            return
        self.signal_group(signal.SIGKILL)
        self._forget_pidfd()
        self.exit_status.set_result(self._process.wait())


@dataclass
class _Launch:
    """How to start the pod's first container on this machine."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    termination_message_file: Path
    log_dir: Path


@dataclass
class _PodRun:
    """A pod this kubelet runs."""

    pod: dict  # as first seen
    deletion: asyncio.Future[dict]  # resolved with the pod as deleted
    task: asyncio.Task | None = None
    process: _Process | None = None

    def delete(self, pod: dict) -> None:
        if not self.deletion.done():
            self.deletion.set_result(pod)


@dataclass
class _StatusReport:
    """Builds a pod's status as a kubelet reports it, keeping condition transition times."""

    pod: dict
    start_time: str
    restart_count: int = 0
    container_id: str | None = None  # the current container instance's
    last_state: dict = field(default_factory=dict)
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type: (status, since)

    def build(self, *, phase: str, state: dict) -> dict:
        now = rfc3339(utc_now())
        spec = self.pod["spec"]
        container = spec["containers"][0]
        running = "running" in state
        unready_reason = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(phase, "ContainersNotReady")
        unready_message = None if phase in TERMINAL_PHASES else f"containers with unready status: [{container['name']}]"
        conditions = [
            self._condition("PodReadyToStartContainers", phase not in TERMINAL_PHASES, now),
            self._condition("Initialized", True, now),
            self._condition("Ready", running, now, reason=unready_reason, message=unready_message),
            self._condition("ContainersReady", running, now, reason=unready_reason, message=unready_message),
            self._condition("PodScheduled", True, now),
        ]
        container_status = {
            "name": container["name"],
            "image": container.get("image", ""),
            "ready": running,
            "restartCount": self.restart_count,
            "started": running,
            "state": state,
            "lastState": self.last_state,
        }
        if self.container_id is not None:
            container_status["containerID"] = self.container_id
        not_run = [c["name"] for c in (spec.get("initContainers") or []) + spec["containers"][1:]]
        return {
            "phase": phase,
            "conditions": conditions,
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP,
            "podIPs": [{"ip": NODE_IP}],
            "startTime": self.start_time,
            "containerStatuses": [container_status],
            "message": f"kubenas emulator: only the first container runs; not run: {', '.join(not_run)}" if not_run else None,
        }

    def _condition(self, kind: str, true: bool, now: str, *, reason: str | None = None, message: str | None = None) -> dict:
        status = "True" if true else "False"
        previous, since = self.transitions.get(kind, (None, now))
        if previous != status:
            since = now
        self.transitions[kind] = (status, since)
        condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
        if not true and reason is not None:
            condition["reason"] = reason
            if message is not None:
                condition["message"] = message
        return condition


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
        report = _StatusReport(pod=pod, start_time=rfc3339(utc_now()))
        await self._write(pod, report.build(phase="Pending", state={"waiting": {"reason": "ContainerCreating"}}))
        try:
            launch = self._prepare(pod)
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

    async def _run_until_done(self, pod: dict, run: _PodRun, report: _StatusReport, launch: _Launch) -> None:
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

    async def _run_container(self, pod: dict, run: _PodRun, report: _StatusReport, launch: _Launch) -> dict:
        """Runs the container once; returns its `terminated` state."""
        container = pod["spec"]["containers"][0]
        container_id = report.container_id = f"containerd://{secrets.token_hex(32)}"
        launch.termination_message_file.write_bytes(b"")  # each instance starts with an empty one
        log_path = launch.log_dir / f"{report.restart_count}.log"
        started_at = rfc3339(utc_now())
        try:
            with open(log_path, "wb") as log_file:
                popen = subprocess.Popen(
                    launch.argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=launch.env, cwd=launch.cwd, preexec_fn=_die_with_kubelet, start_new_session=True,
                )
        except OSError as error:
            return {
                "exitCode": 128, "reason": "StartError", "containerID": container_id,
                "message": f"failed to start container {container['name']!r}: exec: {launch.argv[0]!r}: {error.strerror}",
                "startedAt": "1970-01-01T00:00:00Z", "finishedAt": rfc3339(utc_now()),  # as containerd reports it
            }
        process = run.process = _Process(popen)
        await self._write(pod, report.build(phase="Running", state={"running": {"startedAt": started_at}}))
        await asyncio.wait([process.exit_status, run.deletion], return_when=asyncio.FIRST_COMPLETED)
        if not process.exit_status.done():
            process.signal_group(signal.SIGTERM)
            await asyncio.wait([process.exit_status], timeout=_grace_period(run.deletion.result()))
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
        message = _termination_message(launch.termination_message_file, log_path, fallback_to_logs=fallback)
        if message:
            terminated["message"] = message
        return terminated

    async def _fail_lost(self, pod: dict) -> None:
        """Fails a pod that a previous kubelet ran or was to run: its processes, if any, died
        with that kubelet."""
        metadata = pod["metadata"]
        status = pod.get("status") or {}
        report = _StatusReport(pod=pod, start_time=status.get("startTime") or rfc3339(utc_now()))
        for previous in (status.get("containerStatuses") or [])[:1]:
            report.restart_count = previous.get("restartCount", 0)
            report.container_id = previous.get("containerID")
        lost = report.build(phase="Failed", state={"terminated": {
            "exitCode": 137, "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
        }})
        lost["reason"] = "NodeLost"
        lost["message"] = f"Node {self._node_name} which was running pod {metadata['name']} is unresponsive: its kubelet restarted without the pod's processes"
        lost["conditions"].append({
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
            "message": "PodGC: the node lost the pod", "lastProbeTime": None, "lastTransitionTime": rfc3339(utc_now()),
        })
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

    def _prepare(self, pod: dict) -> _Launch:
        """The container's command line, environment and directories on this machine."""
        metadata, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        sandbox = self._workdir / "pods" / metadata["uid"]
        message_file = sandbox / "containers" / container["name"] / "termination-log"
        message_file.parent.mkdir(parents=True, exist_ok=True)
        host_paths = {container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH: message_file}
        volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                raise ContainerConfigError(f'volume "{mount["name"]}" is mounted but not defined in spec.volumes')
            host_path = self._volume_path(volumes[mount["name"]], namespace=metadata["namespace"], sandbox=sandbox)
            if mount.get("subPath"):
                host_path = host_path / mount["subPath"]
                host_path.mkdir(parents=True, exist_ok=True)
            host_paths[mount["mountPath"]] = host_path
        container_env = _container_env(pod, container)
        command = container.get("command") or []
        argv = [_argument_on_host(expand(part, container_env), host_paths) for part in (*command, *(container.get("args") or []))]
        if not command:
            argv = [sys.executable, "-m", "kubenas_trainer", *argv]  # the trainer image's entrypoint
        elif argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        threads = str(_cpu_threads(container))
        env = {
            **os.environ, "HOSTNAME": metadata["name"], "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
            **{name: _on_host(value, host_paths) for name, value in container_env.items()},
        }
        log_dir = self._log_dir(metadata) / container["name"]
        log_dir.mkdir(parents=True, exist_ok=True)
        return _Launch(
            argv=argv, env=env, cwd=_working_directory(container.get("workingDir"), host_paths, sandbox=sandbox),
            termination_message_file=message_file, log_dir=log_dir,
        )

    def _volume_path(self, volume: dict, *, namespace: str, sandbox: Path) -> Path:
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type", "") not in ("", "DirectoryOrCreate"):
                return path  # a file or socket the host must already have
        elif "persistentVolumeClaim" in volume:
            path = self._workdir / "claims" / namespace / volume["persistentVolumeClaim"]["claimName"]
        else:
            path = sandbox / "volumes" / volume["name"]
        path.mkdir(parents=True, exist_ok=True)
        return path


def _container_env(pod: dict, container: dict) -> dict[str, str]:
    """The container's `env` as the container sees it; `$(VAR)` in a value refers to the
    variables defined before it."""
    env: dict[str, str] = {}
    for variable in container.get("env") or []:
        source = variable.get("valueFrom")
        if source is None:
            env[variable["name"]] = expand(variable.get("value", ""), env)
        elif "fieldRef" in source:
            env[variable["name"]] = _field_value(pod, source["fieldRef"]["fieldPath"])
        else:
            raise ContainerConfigError(f"env {variable['name']}: valueFrom.{next(iter(source), '')} is not emulated")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion; `$$` escapes a `$`; an undefined `$(VAR)` stays as
    written. (kubenas.evaluators has the same for the local runner; importing it here would
    load PyTorch.)"""
    return _VARIABLE_REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def _field_value(pod: dict, path: str) -> str:
    metadata, spec = pod["metadata"], pod["spec"]
    fields = {
        "metadata.name": metadata["name"],
        "metadata.namespace": metadata["namespace"],
        "metadata.uid": metadata["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": NODE_IP,
        "status.podIP": NODE_IP,
    }
    if path in fields:
        return fields[path]
    match = _LABEL_OR_ANNOTATION.fullmatch(path)
    if match is None:
        raise ContainerConfigError(f"fieldRef {path!r} is not emulated")
    return (metadata.get(match[1]) or {}).get(match[2], "")


def _on_host(value: str, host_paths: dict[str, Path]) -> str:
    """`value` with a leading container path replaced by its host path."""
    for container_path in sorted(host_paths, key=len, reverse=True):
        prefix = container_path.rstrip("/")
        if value == container_path or value == prefix or value.startswith(prefix + "/"):
            return str(host_paths[container_path]) + value[len(prefix):]
    return value


def _argument_on_host(argument: str, host_paths: dict[str, Path]) -> str:
    if argument.startswith("-") and "=" in argument:
        option, _, value = argument.partition("=")
        return f"{option}={_on_host(value, host_paths)}"
    return _on_host(argument, host_paths)


def _working_directory(working_dir: str | None, host_paths: dict[str, Path], *, sandbox: Path) -> Path:
    if not working_dir:
        return Path.cwd()
    mapped = _on_host(working_dir, host_paths)
    if mapped == working_dir and Path(working_dir).is_dir():
        return Path(working_dir)
    path = Path(mapped) if mapped != working_dir else sandbox / "rootfs" / working_dir.lstrip("/")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_threads(container: dict) -> int:
    resources = container.get("resources") or {}
    cpu = (resources.get("limits") or {}).get("cpu") or (resources.get("requests") or {}).get("cpu")
    if cpu is None:
        return 1
    text = str(cpu)
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ContainerConfigError(f"resources: cpu {text!r} is not a quantity") from None
    return max(1, math.ceil(cores))


def _grace_period(pod: dict) -> float:
    """Seconds between SIGTERM and SIGKILL: the deletion's grace period, else the pod's."""
    seconds = pod["metadata"].get("deletionGracePeriodSeconds")
    if seconds is None:
        seconds = pod["spec"].get("terminationGracePeriodSeconds", 30)
    return min(float(seconds), GRACE_PERIOD_CAP_SECONDS)


def _termination_message(path: Path, log_path: Path, *, fallback_to_logs: bool) -> str:
    try:
        with path.open("rb") as handle:
            message = handle.read(MAX_TERMINATION_MESSAGE_BYTES)
    except OSError:
        message = b""
    if not message and fallback_to_logs:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - FALLBACK_LOG_BYTES))
            tail = handle.read()
        message = b"".join(tail.splitlines(keepends=True)[-FALLBACK_LOG_LINES:])
    return message.decode("utf-8", errors="replace")
