"""How the process kubelet starts a pod's first container on this machine: its command
line (the image map supplies an image's entrypoint where the container names no
command), its environment and its mounts."""

from __future__ import annotations

import base64
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kubenas.budget import quantity
from kubenas.expansion import expand
from kubenas.localcluster.client import Client
from kubenas.localcluster.sandbox import Mount
from kubenas.localcluster.volumes import ContainerConfigError, field_value

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# Of the kubelet's own environment, what a container still sees: where programs are, the
# locale, and the OpenBLAS settings some processors here need.
PASSED_THROUGH = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# The image is this machine: its Python and import path stay visible in every container,
# even below a volume's mountPath (kubenas.localcluster.sandbox.enter).
IMAGE_PATHS = sorted({
    sys.prefix, sys.base_prefix, sys.exec_prefix, *(path for path in sys.path if os.path.isdir(path)),
    *(str(Path(spec.origin).parents[1]) for name in ("kubenas", "kubenas_trainer")  # editable installs' sources
      if (spec := importlib.util.find_spec(name)) is not None and spec.origin),
})
# kubenas's own images, as their Dockerfiles define them.
BUILTIN_IMAGES = {
    "ghcr.io/kubenas/operator": {"command": ["python", "-m", "kubenas.cli", "operator"],
                                 "env": {"HOME": "/tmp", "MPLCONFIGDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}},
    "ghcr.io/kubenas/trainer": {"command": ["python", "-m", "kubenas_trainer"]},
}


@dataclass
class ImageEntry:
    command: list[str]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = "/"


class ImageMap:
    """image (without tag or digest) -> what its ENTRYPOINT, CMD, ENV and WORKDIR would be.
    The file is YAML: `images: {REPOSITORY: {command: [...], args: [...], env: {...}, workingDir: ...}}`."""

    def __init__(self, entries: dict[str, dict]) -> None:
        self.entries = {name: ImageEntry(command=list(entry.get("command") or []), args=list(entry.get("args") or []),
                                         env=dict(entry.get("env") or {}), working_dir=entry.get("workingDir", "/"))
                        for name, entry in entries.items()}

    @classmethod
    def load(cls, path: Path | None) -> ImageMap:
        entries = dict(BUILTIN_IMAGES)
        if path is not None:
            entries.update((yaml.safe_load(Path(path).read_text()) or {}).get("images") or {})
        return cls(entries)

    def lookup(self, image: str) -> ImageEntry | None:
        name = image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
        return self.entries.get(name)


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    working_dir: str
    mounts: list[Mount]
    termination_message_file: Path


async def prepare(pod: dict, *, client: Client, images: ImageMap, volumes: dict[str, Path], sandbox: Path,
                  api_host: str, api_port: int) -> Launch:
    spec = pod["spec"]
    container = spec["containers"][0]
    image = images.lookup(container.get("image", ""))
    message_file = sandbox / "containers" / container["name"] / "termination-log"
    message_file.parent.mkdir(parents=True, exist_ok=True)
    message_file.write_bytes(b"")
    mounts = [Mount(message_file, container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)]
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise ContainerConfigError(f'volume "{mount["name"]}" is mounted but not defined in spec.volumes')
        source = volumes[mount["name"]] / mount.get("subPath", "")
        if mount.get("subPath") and not source.exists():
            source.mkdir(parents=True)
        mounts.append(Mount(source, mount["mountPath"], read_only=bool(mount.get("readOnly"))))
    container_env = await _container_env(pod, container, client=client)
    threads = str(_cpu_threads(container))
    env = {
        **{name: os.environ[name] for name in PASSED_THROUGH if name in os.environ},
        "HOME": "/", "HOSTNAME": pod["metadata"]["name"],
        "KUBERNETES_SERVICE_HOST": api_host, "KUBERNETES_SERVICE_PORT": str(api_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(api_port), "KUBERNETES_PORT": f"tcp://{api_host}:{api_port}",
        # Many children share this machine's cores: one BLAS thread per CPU of the limit.
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
        **(image.env if image else {}), **container_env,
    }
    command, args = container.get("command"), container.get("args")
    if not command:
        if image is None:
            raise ContainerConfigError(f"image {container.get('image')!r} is not in the kubelet's image map and the "
                                       "container names no command")
        command, args = image.command, args if args is not None else image.args
    argv = [expand(part, env) for part in (*command, *(args or []))]
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable  # the image's Python is this machine's
    working_dir = container.get("workingDir") or (image.working_dir if image else "/")
    return Launch(argv=argv, env=env, working_dir=working_dir, mounts=mounts, termination_message_file=message_file)


async def _container_env(pod: dict, container: dict, *, client: Client) -> dict[str, str]:
    """envFrom, then env; `$(VAR)` in a value refers to the variables defined before it."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for kind, resource in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            if kind in source:
                data = await _data(client, namespace, resource, source[kind]["name"], optional=source[kind].get("optional"))
                env.update({source.get("prefix", "") + key: value for key, value in data.items()})
    for variable in container.get("env") or []:
        source = variable.get("valueFrom")
        if source is None:
            env[variable["name"]] = expand(variable.get("value", ""), env)
        elif "fieldRef" in source:
            env[variable["name"]] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            kind, resource = ("configMapKeyRef", "configmaps") if "configMapKeyRef" in source else ("secretKeyRef", "secrets")
            ref = source[kind]
            data = await _data(client, namespace, resource, ref["name"], optional=ref.get("optional"))
            if ref["key"] in data:
                env[variable["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                raise ContainerConfigError(f"couldn't find key {ref['key']} in {resource[:-1]} {namespace}/{ref['name']}")
        else:
            raise ContainerConfigError(f"env {variable['name']}: valueFrom.{next(iter(source), '')} is not supported")
    return env


async def _data(client: Client, namespace: str, resource: str, name: str, *, optional: bool | None) -> dict[str, str]:
    found = await client.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}")
    if found is None:
        if optional:
            return {}
        raise ContainerConfigError(f'{resource[:-1]} "{name}" not found')
    data = found.get("data") or {}
    if resource == "secrets":
        return {key: base64.b64decode(value).decode(errors="replace") for key, value in data.items()}
    return dict(data)


def _cpu_threads(container: dict) -> int:
    """Threads for the container: its cpu limit (else request) rounded up, at least 1."""
    resources = container.get("resources") or {}
    cpu = (resources.get("limits") or {}).get("cpu") or (resources.get("requests") or {}).get("cpu")
    return 1 if cpu is None else max(1, math.ceil(quantity(cpu)))


def memory_limit_bytes(container: dict) -> int | None:
    """The container's memory limit in bytes."""
    value = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None if value is None else int(quantity(value))
