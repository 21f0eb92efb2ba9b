"""How the emulated kubelet (kubenas.testing.kubelet, whose docstring has the rules)
launches a pod's first container on this machine: its command line after `$(VAR)`
expansion, its environment, and its container paths (terminationMessagePath, volume
mounts, workingDir) mapped onto host paths in the pod's sandbox, with every argument and
env value that names such a path rewritten to the host path."""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from kubenas.expansion import expand
from kubenas.testing.kubelet_status import NODE_IP

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
_LABEL_OR_ANNOTATION = re.compile(r"metadata\.(labels|annotations)\['([^']*)'\]")


class ContainerConfigError(Exception):
    """The container cannot be created as specified (the kubelet's CreateContainerConfigError)."""


@dataclass
class Launch:
    """How to start the pod's first container on this machine."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    termination_message_file: Path
    log_dir: Path


def prepare(pod: dict, *, workdir: Path, pod_log_dir: Path) -> Launch:
    """The container's command line, environment and directories on this machine."""
    metadata, spec = pod["metadata"], pod["spec"]
    container = spec["containers"][0]
    sandbox = workdir / "pods" / metadata["uid"]
    message_file = sandbox / "containers" / container["name"] / "termination-log"
    message_file.parent.mkdir(parents=True, exist_ok=True)
    host_paths = {container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH: message_file}
    volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise ContainerConfigError(f'volume "{mount["name"]}" is mounted but not defined in spec.volumes')
        host_path = _volume_path(volumes[mount["name"]], workdir=workdir, namespace=metadata["namespace"], sandbox=sandbox)
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
    log_dir = pod_log_dir / container["name"]
    log_dir.mkdir(parents=True, exist_ok=True)
    return Launch(
        argv=argv, env=env, cwd=_working_directory(container.get("workingDir"), host_paths, sandbox=sandbox),
        termination_message_file=message_file, log_dir=log_dir,
    )


def _volume_path(volume: dict, *, workdir: Path, namespace: str, sandbox: Path) -> Path:
    if "hostPath" in volume:
        path = Path(volume["hostPath"]["path"])
        if volume["hostPath"].get("type", "") not in ("", "DirectoryOrCreate"):
            return path  # a file or socket the host must already have
    elif "persistentVolumeClaim" in volume:
        path = workdir / "claims" / namespace / volume["persistentVolumeClaim"]["claimName"]
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
