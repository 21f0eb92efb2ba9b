"""The process kubelet's volumes: each of a pod's volumes becomes a host folder that the
container sees at its mountPath (kubenas.localcluster.sandbox bind-mounts it in the
pod's own mount namespace). configMap, secret, downwardAPI and projected volumes
(service-account tokens from the TokenRequest API included) are written from the API, as
the node's identity, which the Node authorizer lets read only what its pods reference."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from kubenas.localcluster.client import ApiError, Client

DEFAULT_TOKEN_SECONDS = 3607  # what the ServiceAccount admission plugin puts in kube-api-access-*
NODE_IP = "127.0.0.1"


class ContainerConfigError(Exception):
    """The container cannot be set up as specified (the kubelet's CreateContainerConfigError)."""


@dataclass
class Volumes:
    paths: dict[str, Path]  # volume name -> host folder
    refresh_after: float | None  # seconds until a service-account token needs renewing


async def materialize(pod: dict, *, client: Client, sandbox: Path, claims: Path) -> Volumes:
    """Writes every volume of `pod` under `sandbox`/volumes (again on a token refresh)."""
    namespace = pod["metadata"]["namespace"]
    paths: dict[str, Path] = {}
    refresh: list[float] = []
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        folder = sandbox / "volumes" / name
        if "emptyDir" in volume:
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
        elif "hostPath" in volume:
            folder = _host_path(volume["hostPath"], name)
        elif "persistentVolumeClaim" in volume:
            folder = claims / namespace / volume["persistentVolumeClaim"]["claimName"]
            folder.mkdir(parents=True, exist_ok=True)
        elif "configMap" in volume:
            _write(folder, await _object_files(client, namespace, "configmaps", volume["configMap"]), volume["configMap"])
        elif "secret" in volume:
            source = {**volume["secret"], "name": volume["secret"].get("secretName")}
            _write(folder, await _object_files(client, namespace, "secrets", source), volume["secret"])
        elif "downwardAPI" in volume:
            _write(folder, {item["path"]: field_value(pod, item["fieldRef"]["fieldPath"])
                            for item in volume["downwardAPI"].get("items") or []}, volume["downwardAPI"])
        elif "projected" in volume:
            files = {}
            for source in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    token = source["serviceAccountToken"]
                    seconds = token.get("expirationSeconds", DEFAULT_TOKEN_SECONDS)
                    files[token["path"]] = await _token(client, pod, audience=token.get("audience"), seconds=seconds)
                    refresh.append(0.8 * seconds)  # as the kubelet renews them
                elif "configMap" in source:
                    files.update(await _object_files(client, namespace, "configmaps", source["configMap"]))
                elif "secret" in source:
                    files.update(await _object_files(client, namespace, "secrets", source["secret"]))
                elif "downwardAPI" in source:
                    files.update({item["path"]: field_value(pod, item["fieldRef"]["fieldPath"])
                                  for item in source["downwardAPI"].get("items") or []})
                else:
                    raise ContainerConfigError(f"volume {name!r}: projected source {next(iter(source), '?')} is not supported")
            _write(folder, files, volume["projected"])
        else:
            kind = next((key for key in volume if key != "name"), "?")
            raise ContainerConfigError(f"volume {name!r}: {kind} volumes are not supported by the process kubelet")
        paths[name] = folder
    return Volumes(paths=paths, refresh_after=min(refresh) if refresh else None)


def _host_path(source: dict, name: str) -> Path:
    path, kind = Path(source["path"]), source.get("type", "")
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif kind == "Directory" and not path.is_dir():
        raise ContainerConfigError(f"volume {name!r}: hostPath type check failed: {path} is not a directory")
    elif kind == "File" and not path.is_file():
        raise ContainerConfigError(f"volume {name!r}: hostPath type check failed: {path} is not a file")
    elif not path.exists():
        raise ContainerConfigError(f"volume {name!r}: hostPath {path} does not exist")
    return path


async def _object_files(client: Client, namespace: str, resource: str, source: dict) -> dict[str, bytes | str]:
    """The files a configMap or secret source projects: every key, or the listed items."""
    name = source.get("name")
    found = await client.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}")
    if found is None:
        if source.get("optional"):
            return {}
        raise ContainerConfigError(f'{resource[:-1]} "{name}" not found')
    if resource == "secrets":
        data = {key: base64.b64decode(value) for key, value in (found.get("data") or {}).items()}
    else:
        data = {**(found.get("data") or {}),
                **{key: base64.b64decode(value) for key, value in (found.get("binaryData") or {}).items()}}
    items = source.get("items")
    if not items:
        return data
    missing = [item["key"] for item in items if item["key"] not in data]
    if missing and not source.get("optional"):
        raise ContainerConfigError(f'{resource[:-1]} "{name}": no key {missing[0]!r}')
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


async def _token(client: Client, pod: dict, *, audience: str | None, seconds: int) -> str:
    metadata = pod["metadata"]
    account = pod["spec"].get("serviceAccountName") or "default"
    spec: dict = {"expirationSeconds": seconds,
                  "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": metadata["name"], "uid": metadata["uid"]}}
    if audience:
        spec["audiences"] = [audience]
    try:
        answer = await client.request("POST", f"/api/v1/namespaces/{metadata['namespace']}/serviceaccounts/{account}/token",
                                      body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    except ApiError as error:
        raise ContainerConfigError(f"service account token for {account!r}: {error.message}") from None
    return answer["status"]["token"]


def _write(folder: Path, files: dict[str, bytes | str], source: dict) -> None:
    """Each file written whole and renamed into place, so a reader never sees half of one."""
    folder.mkdir(parents=True, exist_ok=True)
    mode = source.get("defaultMode", 0o644)
    for relative, content in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(content.encode() if isinstance(content, str) else content)
        partial.chmod(mode)
        os.replace(partial, target)


def field_value(pod: dict, path: str) -> str:
    """A downward-API fieldRef's value."""
    metadata, spec = pod["metadata"], pod["spec"]
    fields = {
        "metadata.name": metadata["name"], "metadata.namespace": metadata["namespace"], "metadata.uid": metadata["uid"],
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": NODE_IP, "status.podIP": NODE_IP, "status.hostIPs": NODE_IP, "status.podIPs": NODE_IP,
    }
    if path in fields:
        return fields[path]
    for kind in ("labels", "annotations"):
        if path == f"metadata.{kind}":
            return "\n".join(f'{key}="{value}"' for key, value in sorted((metadata.get(kind) or {}).items()))
        prefix = f"metadata.{kind}['"
        if path.startswith(prefix) and path.endswith("']"):
            return (metadata.get(kind) or {}).get(path[len(prefix):-2], "")
    raise ContainerConfigError(f"fieldRef {path!r} is not supported")
