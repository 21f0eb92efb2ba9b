"""API discovery documents, built from the registry: the legacy per-group documents
(`/apis`, `/apis/<group>`, `/api/v1`, `/apis/<group>/<version>`) that kopf reads, and the
aggregated discovery (apidiscovery.k8s.io/v2) that kubectl asks for first, which saves
it one request per group-version."""

from __future__ import annotations

from typing import Any

from kubenas.testing.registry import Registry, ResourceType

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
STATUS_VERBS = ["get", "patch", "update"]
SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubenas",
    "gitTreeState": "clean",
    "goVersion": "python",
    "compiler": "kubenas.testing",
    "platform": "linux/amd64",
}


def served_subresources(resource_type: ResourceType) -> list[tuple[str, list[str]]]:
    """(subresource, verbs) this server answers: status where enabled, and pods' logs."""
    served = [("status", STATUS_VERBS)] if resource_type.has_status else []
    if resource_type.group == "" and resource_type.plural == "pods":
        served.append(("log", ["get"]))
    return served


def group_version(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}" if group else version, "version": version}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    entry = _group_entry(registry, group)
    return None if entry is None else {"kind": "APIGroup", "apiVersion": "v1"} | entry


def api_group_list(registry: Registry) -> dict[str, Any]:
    entries = [_group_entry(registry, group) for group in registry.groups()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [entry for entry in entries if entry]}


def _group_entry(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.versions(group)
    if not versions:
        return None
    return {
        "name": group,
        "versions": [group_version(group, version) for version in versions],
        "preferredVersion": group_version(group, versions[0]),
    }


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = _types_of(registry, group, version)
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for resource_type in types:
        resources.append(
            {
                "name": resource_type.plural,
                "singularName": resource_type.singular,
                "namespaced": resource_type.namespaced,
                "kind": resource_type.kind,
                "verbs": list(resource_type.verbs),
            }
            | ({"shortNames": list(resource_type.short_names)} if resource_type.short_names else {})
            | ({"categories": list(resource_type.categories)} if resource_type.categories else {})
        )
        for subresource, verbs in served_subresources(resource_type):
            resources.append(
                {
                    "name": f"{resource_type.plural}/{subresource}",
                    "singularName": "",
                    "namespaced": resource_type.namespaced,
                    "kind": resource_type.kind,
                    "verbs": verbs,
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version)["groupVersion"],
        "resources": resources,
    }


def aggregated_discovery(registry: Registry, *, core: bool) -> dict[str, Any]:
    """`/api` (core) or `/apis` (every group) as one APIGroupDiscoveryList."""
    groups = [""] if core else registry.groups()
    items = [
        {
            "metadata": {"name": group},
            "versions": [
                {
                    "version": version,
                    "resources": [_discovered(rt) for rt in _types_of(registry, group, version)],
                    "freshness": "Current",
                }
                for version in (["v1"] if core else registry.versions(group))
            ],
        }
        for group in groups
    ]
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}


def _discovered(resource_type: ResourceType) -> dict[str, Any]:
    response_kind = {"group": resource_type.group, "version": resource_type.version, "kind": resource_type.kind}
    return (
        {
            "resource": resource_type.plural,
            "responseKind": response_kind,
            "scope": "Namespaced" if resource_type.namespaced else "Cluster",
            "singularResource": resource_type.singular,
            "verbs": list(resource_type.verbs),
        }
        | ({"shortNames": list(resource_type.short_names)} if resource_type.short_names else {})
        | ({"categories": list(resource_type.categories)} if resource_type.categories else {})
        | {
            "subresources": [
                {"subresource": name, "responseKind": response_kind, "verbs": verbs}
                for name, verbs in served_subresources(resource_type)
            ]
        }
    )


def _types_of(registry: Registry, group: str, version: str) -> list[ResourceType]:
    return sorted((rt for rt in registry.all() if rt.group == group and rt.version == version), key=lambda rt: rt.plural)
