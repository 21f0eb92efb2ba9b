"""What the API server does to an object on its way into the store: the server-side
fields of a create, the status-subresource isolation and immutable fields of an
update, and admission (CRD checks, custom-resource pruning, defaulting, validation)."""

from __future__ import annotations

import dataclasses
from typing import Any

from kubenas.testing import crds, metadata
from kubenas.testing.contract import ApiError
from kubenas.testing.metadata import json_copy
from kubenas.testing.registry import ResourceType
from kubenas.testing.schema import FORBIDDEN, FieldError

INITIAL_STATUS: dict[tuple[str, str], dict[str, Any]] = {
    ("", "pods"): {"phase": "Pending"},
    ("", "namespaces"): {"phase": "Active"},
}


@dataclasses.dataclass(kw_only=True)
class WriteOptions:
    """Per-request write settings of the HTTP API; `warnings` collects what to tell the client."""

    dry_run: bool = False
    field_validation: str = "Warn"  # Strict, Warn or Ignore: what to do about unknown fields
    warnings: list[str] = dataclasses.field(default_factory=list)


def body_of(obj: Any) -> dict[str, Any]:
    body = json_copy(obj)
    if not isinstance(body, dict) or not isinstance(body.setdefault("metadata", {}), dict):
        raise ApiError(400, "BadRequest", "the object must be a JSON object with a metadata object")
    return body


def prepare_create(
    resource_type: ResourceType, body: dict[str, Any], *, namespace: str | None, options: WriteOptions
) -> dict[str, Any]:
    """The object as stored on create; `body` has its final name, `namespace` is checked."""
    meta = body["metadata"]
    if problems := metadata.metadata_problems(resource_type, body):
        raise metadata.invalid(resource_type, meta.get("name", ""), problems)
    for field in metadata.SERVER_FIELDS:
        meta.pop(field, None)
    meta |= {"uid": metadata.new_uid(), "creationTimestamp": metadata.now(), "generation": 1}
    meta.pop("namespace", None)
    meta |= {"namespace": namespace} if namespace is not None else {}
    body |= {"apiVersion": resource_type.api_version, "kind": resource_type.kind}
    if resource_type.has_status:
        body.pop("status", None)
        body |= {"status": dict(INITIAL_STATUS[resource_type.storage])} if resource_type.storage in INITIAL_STATUS else {}
    return admit(resource_type, body, options)


def prepare_update(
    resource_type: ResourceType,
    current: dict[str, Any],
    desired: dict[str, Any],
    *,
    subresource: str | None,
    options: WriteOptions,
) -> dict[str, Any]:
    """The object as stored after a PUT or PATCH of `subresource` (None or "status")."""
    if subresource == "status" and resource_type.has_status:
        new = json_copy(current)  # /status changes the status only
        new.pop("status", None)
        new |= {"status": desired["status"]} if desired.get("status") is not None else {}
    elif subresource is None:
        new = desired
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        if resource_type.has_status:  # the main endpoint leaves the status alone
            new.pop("status", None)
            new |= {"status": current["status"]} if "status" in current else {}
    else:
        raise ApiError(
            404, "NotFound", f"the server could not find the requested resource ({resource_type.plural}/{subresource})"
        )
    meta, old_meta = new["metadata"], current["metadata"]
    for field in ("name", "namespace", *metadata.SERVER_FIELDS):
        meta.pop(field, None)
        meta |= {field: old_meta[field]} if field in old_meta else {}
    new |= {"apiVersion": resource_type.api_version, "kind": resource_type.kind}
    if old_meta.get("deletionTimestamp") and not set(meta.get("finalizers") or []) <= set(old_meta.get("finalizers") or []):
        detail = "no new finalizers can be added if the object is being deleted"
        raise metadata.invalid(
            resource_type, old_meta["name"], [FieldError("metadata.finalizers", FORBIDDEN, meta["finalizers"], detail)]
        )
    if problems := metadata.metadata_problems(resource_type, new):
        raise metadata.invalid(resource_type, old_meta["name"], problems)
    new = admit(resource_type, new, options)
    if metadata.generation_changed(current, new):
        new["metadata"]["generation"] = old_meta.get("generation", 1) + 1
    return new


def admit(resource_type: ResourceType, obj: dict[str, Any], options: WriteOptions) -> dict[str, Any]:
    if resource_type.key == crds.CRD_RESOURCE:
        crds.check_definition(resource_type, obj)
        obj["status"] = crds.established_status(obj)
    if resource_type.schema is None:
        return obj
    admitted, unknown = crds.admit(resource_type, obj)
    if unknown and options.field_validation == "Strict":
        raise crds.unknown_fields_error(resource_type, unknown)
    if options.field_validation == "Warn":
        options.warnings += [f'unknown field "{path}"' for path in unknown]
    return admitted


def namespace_for(resource_type: ResourceType, requested: str | None, in_body: str | None) -> str | None:
    """Where a new object goes: the URL's namespace, or the body's; None for cluster-scoped kinds."""
    if not resource_type.namespaced:
        return None
    if requested and in_body and requested != in_body:
        raise ApiError(
            400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request"
        )
    if not (requested or in_body):
        raise ApiError(400, "BadRequest", f"a namespace is required for {resource_type.group_resource}")
    return requested or in_body


def check_precondition(resource_type: ResourceType, current: dict[str, Any], resource_version: str | None) -> None:
    """409 Conflict when a write names a resourceVersion that is no longer the object's."""
    if resource_version and resource_version != current["metadata"]["resourceVersion"]:
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {resource_type.group_resource} "{current["metadata"]["name"]}": '
            "the object has been modified; please apply your changes to the latest version and try again",
            details=resource_type.describe(current["metadata"]["name"]),
        )
