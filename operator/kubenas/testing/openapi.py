"""OpenAPI v3 documents as kubectl reads them: the `/openapi/v3` index and one document
per group-version, whose component schemas carry `x-kubernetes-group-version-kind`.

Custom resources publish their CRD version's schema (so `kubectl explain` prints its
descriptions); built-in kinds publish a permissive object. Every PATCH operation lists
the `fieldValidation` parameter, so kubectl leaves validation to this server (which
rejects unknown fields of custom resources), and none accepts strategic merge patch,
so kubectl computes patches for built-ins from its own compiled-in types.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kubenas.testing.registry import Registry, ResourceType

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
PATCH_CONTENT_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")
_TEXT = {"type": "string"}
_TEXTS = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
    "type": "object",
    "properties": {
        "name": _TEXT | {"description": "Name must be unique within a namespace."},
        "generateName": _TEXT | {"description": "A prefix the server uses to generate a unique name when no name is given."},
        "namespace": _TEXT | {"description": "The namespace the object is in; empty for cluster-scoped objects."},
        "uid": _TEXT | {"description": "The unique identity of this object, set by the server."},
        "resourceVersion": _TEXT | {"description": "An opaque version of this object, set by the server on every change."},
        "generation": {
            "type": "integer",
            "format": "int64",
            "description": "A sequence number of changes to the desired state, set by the server.",
        },
        "creationTimestamp": _TEXT
        | {"format": "date-time", "description": "When the object was created, set by the server."},
        "deletionTimestamp": _TEXT
        | {"format": "date-time", "description": "When the object was asked to be deleted, set by the server."},
        "labels": _TEXTS | {"description": "Map of string keys and values to organize and select objects."},
        "annotations": _TEXTS | {"description": "Unstructured key value map for arbitrary metadata."},
        "finalizers": {
            "type": "array",
            "items": _TEXT,
            "description": "Must be empty before the object is deleted from the registry.",
        },
        "ownerReferences": {
            "type": "array",
            "items": {"$ref": f"#/components/schemas/{META}.OwnerReference"},
            "description": "Objects this object depends on.",
        },
    },
}
OWNER_REFERENCE = {
    "description": "OwnerReference identifies an owning object, whose deletion collects this one.",
    "type": "object",
    "required": ["apiVersion", "kind", "name", "uid"],
    "properties": {key: _TEXT for key in ("apiVersion", "kind", "name", "uid")}
    | {"controller": {"type": "boolean"}, "blockOwnerDeletion": {"type": "boolean"}},
}
LIST_META = {
    "description": "ListMeta describes metadata that synthetic resources must have.",
    "type": "object",
    "properties": {
        "resourceVersion": _TEXT,
        "continue": _TEXT,
        "remainingItemCount": {"type": "integer", "format": "int64"},
    },
}
ENVELOPE = {
    "apiVersion": _TEXT | {"description": "APIVersion defines the versioned schema of this representation of an object."},
    "kind": _TEXT | {"description": "Kind is a string value representing the REST resource this object represents."},
}


class OpenApi:
    """The documents for the registry's current resource types, rebuilt when it changes."""

    def __init__(self, *, registry: Registry) -> None:
        self._registry = registry
        self._revision = -1
        self._documents: dict[str, bytes] = {}

    def index(self) -> dict[str, Any]:
        documents = self._current()
        return {
            "paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={_hash(body)}"} for key, body in documents.items()}
        }

    def document(self, key: str) -> bytes | None:
        """The serialized document for "api/v1" or "apis/<group>/<version>", if served."""
        return self._current().get(key)

    def _current(self) -> dict[str, bytes]:
        if self._revision != self._registry.revision:
            by_group_version: dict[str, list[ResourceType]] = {}
            for resource_type in self._registry.all():
                by_group_version.setdefault(_key(resource_type), []).append(resource_type)
            self._documents = {key: json.dumps(_document(types)).encode() for key, types in sorted(by_group_version.items())}
            self._revision = self._registry.revision
        return self._documents


def _document(types: list[ResourceType]) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        f"{META}.ObjectMeta": OBJECT_META,
        f"{META}.ListMeta": LIST_META,
        f"{META}.OwnerReference": OWNER_REFERENCE,
        f"{META}.Patch": {"type": "object"},
    }
    paths: dict[str, Any] = {}
    for resource_type in types:
        name = _schema_name(resource_type)
        schemas[name] = _object_schema(resource_type)
        schemas[f"{name}List"] = _list_schema(resource_type, item=name)
        paths |= _paths(resource_type, item=name)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _object_schema(resource_type: ResourceType) -> dict[str, Any]:
    schema = (
        copy.deepcopy(resource_type.schema)
        if resource_type.schema
        else {
            "description": f"{resource_type.kind}: its fields are not published by this emulated cluster.",
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    )
    schema.setdefault("properties", {}).update(
        ENVELOPE
        | {
            "metadata": {
                "description": "Standard object's metadata.",
                "allOf": [{"$ref": f"#/components/schemas/{META}.ObjectMeta"}],
            }
        }
    )
    schema["x-kubernetes-group-version-kind"] = [_gvk(resource_type)]
    return schema


def _list_schema(resource_type: ResourceType, *, item: str) -> dict[str, Any]:
    return {
        "description": f"{resource_type.kind}List is a list of {resource_type.kind}.",
        "type": "object",
        "required": ["items"],
        "properties": ENVELOPE
        | {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "metadata": {"allOf": [{"$ref": f"#/components/schemas/{META}.ListMeta"}]},
        },
        "x-kubernetes-group-version-kind": [_gvk(resource_type, kind=f"{resource_type.kind}List")],
    }


def _paths(resource_type: ResourceType, *, item: str) -> dict[str, Any]:
    base = f"/apis/{resource_type.group}/{resource_type.version}" if resource_type.group else f"/api/{resource_type.version}"
    collection = (
        f"{base}/namespaces/{{namespace}}/{resource_type.plural}"
        if resource_type.namespaced
        else f"{base}/{resource_type.plural}"
    )
    single = f"{collection}/{{name}}"
    ref = {"$ref": f"#/components/schemas/{item}"}
    gvk = _gvk(resource_type)
    paths = {
        collection: {
            "get": _operation(gvk, "list", {"$ref": f"#/components/schemas/{item}List"}),
            "post": _operation(gvk, "post", ref, body=ref),
        },
        single: {
            "get": _operation(gvk, "get", ref),
            "put": _operation(gvk, "put", ref, body=ref),
            "patch": _patch(gvk, ref),
            "delete": _operation(gvk, "delete", ref),
        },
    }
    if resource_type.has_status:
        paths[f"{single}/status"] = {
            "get": _operation(gvk, "get", ref),
            "put": _operation(gvk, "put", ref, body=ref),
            "patch": _patch(gvk, ref),
        }
    return paths


def _operation(
    gvk: dict[str, str], action: str, response: dict[str, Any], *, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}},
    }
    if body is not None:
        operation["requestBody"] = {"content": {"application/json": {"schema": body}}}
        operation["parameters"] = _write_parameters()
    return operation


def _patch(gvk: dict[str, str], response: dict[str, Any]) -> dict[str, Any]:
    operation = _operation(gvk, "patch", response)
    operation["requestBody"] = {
        "content": {
            content_type: {"schema": {"$ref": f"#/components/schemas/{META}.Patch"}} for content_type in PATCH_CONTENT_TYPES
        }
    }
    operation["parameters"] = _write_parameters()
    return operation


def _write_parameters() -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation")
    ]


def _schema_name(resource_type: ResourceType) -> str:
    if resource_type.crd is not None:
        return ".".join(reversed(resource_type.group.split("."))) + f".{resource_type.version}.{resource_type.kind}"
    package = resource_type.group.split(".")[0] if resource_type.group else "core"
    return f"io.k8s.api.{package}.{resource_type.version}.{resource_type.kind}"


def _gvk(resource_type: ResourceType, *, kind: str | None = None) -> dict[str, str]:
    return {"group": resource_type.group, "version": resource_type.version, "kind": kind or resource_type.kind}


def _key(resource_type: ResourceType) -> str:
    return f"apis/{resource_type.group}/{resource_type.version}" if resource_type.group else f"api/{resource_type.version}"


def _hash(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()
