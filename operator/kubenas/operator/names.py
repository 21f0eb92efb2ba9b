"""Resources, names and labels the operator reads and writes.

Child names are deterministic (search name + index), so a retried or restarted handler
finds the child it already made instead of making a second one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kubenas import spec as specs

GROUP = specs.API_GROUP
VERSION = "v1alpha1"
MANAGED_BY = "kubenas"

LABEL_SEARCH = "kubenas.io/search"
LABEL_TRIAL_INDEX = "kubenas.io/trial-index"
LABEL_COMPONENT = "app.kubernetes.io/component"

# Job and pod names end up in label values (job-name=...), which Kubernetes caps at 63.
_MAX_PREFIX = 46


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)


SEARCHES = Resource(GROUP, VERSION, "neuralarchitecturesearches", "NeuralArchitectureSearch")
TRIALS = Resource(GROUP, VERSION, "nastrials", "NASTrial")
JOBS = Resource("batch", "v1", "jobs", "Job")
PODS = Resource("", "v1", "pods", "Pod")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
EVENTS = Resource("", "v1", "events", "Event")


def child_prefix(search: str) -> str:
    if len(search) <= _MAX_PREFIX:
        return search
    digest = hashlib.sha256(search.encode()).hexdigest()[:6]
    return f"{search[: _MAX_PREFIX - 7]}-{digest}"


def trial_name(search: str, index: int) -> str:
    """The NASTrial's and its Job's name: `<search>-<index>`."""
    return f"{child_prefix(search)}-{index}"


def checkpoint_name(search: str) -> str:
    """The ConfigMap holding the search's policy checkpoint."""
    return f"{search}-policy"


def search_labels(search: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kubenas",
        "app.kubernetes.io/instance": search,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_SEARCH: search,
    }


def child_labels(search: str, index: int) -> dict[str, str]:
    return {**search_labels(search), LABEL_COMPONENT: "trial", LABEL_TRIAL_INDEX: str(index)}


def owner_reference(owner: dict, *, controller: bool = True) -> dict:
    """Owner reference to `owner` (a full object): deleting the owner deletes the child."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
