"""Where the real Kubernetes binaries are: built by `make tools` (tools/build.sh) into a
per-user cache folder keyed by their versions, or, as envtest does, taken from the folder
that $KUBEBUILDER_ASSETS names."""

from __future__ import annotations

import os
from pathlib import Path

# The versions tools/go.mod and tools/etcd/go.mod pin (a test keeps them equal).
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.17"
HELM_VERSION = "v3.22.0"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm")


class BinaryNotFound(Exception):
    """A component is not built: the message says how to build it."""


def cache_key() -> str:
    return f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_helm-{HELM_VERSION}"


def cache_dir() -> Path:
    """The folder `make tools` builds into: $KUBENAS_TOOLS_CACHE or ~/.cache/kubenas/tools, then the key."""
    base = os.environ.get("KUBENAS_TOOLS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubenas" / "tools"
    return Path(base) / cache_key()


def bin_dir() -> Path:
    """$KUBEBUILDER_ASSETS when it holds every component, else the cache's bin folder."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and all((Path(assets) / name).is_file() for name in COMPONENTS):
        return Path(assets)
    return cache_dir() / "bin"


TOXIPROXY_VERSION = "v2.5.0"  # tools/toxiproxy/go.mod; built beside the others (the chaos suite's fault proxy)


def find_toxiproxy() -> str:
    """toxiproxy-server, built by `make tools` into the cache's bin folder."""
    path = cache_dir() / "bin" / "toxiproxy-server"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BinaryNotFound(f"toxiproxy-server is not built: run `make tools` (builds toxiproxy {TOXIPROXY_VERSION} "
                             f"from its Go module into {cache_dir() / 'bin'})")
    return str(path)


def find(name: str) -> str:
    """The path of one component, or BinaryNotFound saying how to build it."""
    path = bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BinaryNotFound(
            f"{name} is not built: run `make tools` (builds Kubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION} "
            f"and Helm {HELM_VERSION} from their Go modules into {cache_dir()}), or set KUBEBUILDER_ASSETS to a "
            f"folder holding {', '.join(COMPONENTS)}"
        )
    return str(path)


KUEUE_VERSION = "v0.17.0"  # tools/kueue/go.mod; its CRDs and webhook manifests are copied beside it


def find_kueue() -> tuple[str, Path]:
    """Kueue's controller manager and the folder of its manifests (crds/, webhooks.yaml),
    built by `make tools` into the cache (the stamp names the version they came from)."""
    path = cache_dir() / "bin" / "kueue"
    config = cache_dir() / "kueue-config"
    built = (cache_dir() / f".kueue-{KUEUE_VERSION}").is_file()
    if not (built and path.is_file() and os.access(path, os.X_OK) and (config / "webhooks.yaml").is_file()):
        raise BinaryNotFound(f"kueue {KUEUE_VERSION} is not built: run `make tools` (builds Kueue's controller manager "
                             f"from its Go module into {cache_dir() / 'bin'}, its manifests into {config})")
    return str(path), config
