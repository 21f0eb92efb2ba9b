"""CustomResourceDefinitions: checking one, the resource types it registers, the
status the server gives it, and the admission of custom resources against the
version's openAPIV3Schema (prune, default, validate) as the real API server does."""

from __future__ import annotations

import dataclasses
from typing import Any

from kubenas.testing import schema as schemas
from kubenas.testing.contract import ApiError
from kubenas.testing.metadata import Problem, invalid, now
from kubenas.testing.registry import Registry, ResourceType
from kubenas.testing.schema import INVALID, REQUIRED, UNSUPPORTED, FieldError

CRD_RESOURCE = "apiextensions.k8s.io/v1/customresourcedefinitions"
CUSTOM_RESOURCE_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
DEFAULT_COLUMNS = ({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},)


@dataclasses.dataclass(frozen=True)
class _Complaint:
    """A structural-schema message as check_structural renders it: "FIELD: TYPE: ..."."""

    text: str

    @property
    def field(self) -> str:
        return self.text.split(": ")[0]

    @property
    def type(self) -> str:
        return [*self.text.split(": "), INVALID][1]

    def __str__(self) -> str:
        return self.text


def check_definition(crd_type: ResourceType, crd: dict[str, Any]) -> None:
    """ApiError 422 naming each field that makes the CRD unacceptable."""
    problems: list[Problem] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = crd["metadata"].get("name", "")
    for field, value in (
        ("spec.group", spec.get("group")),
        ("spec.names.plural", names.get("plural")),
        ("spec.names.kind", names.get("kind")),
    ):
        if not value:
            problems.append(FieldError(field, REQUIRED, "", "must not be empty"))
    if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
        problems.append(FieldError("metadata.name", INVALID, name, 'must be spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(
            FieldError("spec.scope", UNSUPPORTED, spec.get("scope", ""), 'supported values: "Cluster", "Namespaced"')
        )
    versions = spec.get("versions") or []
    if sum(1 for version in versions if version.get("storage")) != 1:
        problems.append(
            FieldError(
                "spec.versions",
                INVALID,
                [v.get("name") for v in versions],
                "must have exactly one version marked as storage version",
            )
        )
    for index, version in enumerate(versions):
        path = f"spec.versions[{index}].schema.openAPIV3Schema"
        openapi_schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if not openapi_schema:
            problems.append(FieldError(path, REQUIRED, None, "schemas are required"))
        else:
            problems += [_Complaint(text) for text in schemas.check_structural(openapi_schema, path=path)]
    if problems:
        raise invalid(crd_type, name, problems)


def resource_types(crd: dict[str, Any]) -> list[ResourceType]:
    spec = crd["spec"]
    names = spec["names"]
    return [
        ResourceType(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec["scope"] == "Namespaced",
            verbs=CUSTOM_RESOURCE_VERBS,
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=("status",) if "status" in (version.get("subresources") or {}) else (),
            schema=version["schema"]["openAPIV3Schema"],
            printer_columns=tuple(version.get("additionalPrinterColumns") or DEFAULT_COLUMNS),
            crd=crd["metadata"]["name"],
        )
        for version in spec["versions"]
        if version.get("served", True)
    ]


def established_status(crd: dict[str, Any]) -> dict[str, Any]:
    """The status the real server gives an accepted CRD, keeping the times of an earlier one."""
    names = crd["spec"]["names"]
    accepted = {"plural": names["plural"], "singular": names.get("singular") or names["kind"].lower(), "kind": names["kind"]}
    accepted["listKind"] = names.get("listKind") or f"{names['kind']}List"
    accepted |= {key: names[key] for key in ("shortNames", "categories") if names.get(key)}
    previous = crd.get("status") or {}
    since = {condition.get("type"): condition.get("lastTransitionTime") for condition in previous.get("conditions") or []}
    storage = next(version["name"] for version in crd["spec"]["versions"] if version.get("storage"))
    stored_versions = list(previous.get("storedVersions") or [])
    return {
        "acceptedNames": accepted,
        "conditions": [
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": since.get(kind) or now(),
            }
            for kind, reason, message in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        ],
        "storedVersions": stored_versions if storage in stored_versions else [*stored_versions, storage],
    }


def admit(resource_type: ResourceType, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The object pruned of unknown fields, defaulted and validated (ApiError 422 naming
    the fields), and the paths of the unknown fields it had."""
    assert resource_type.schema is not None
    pruned = schemas.prune(obj, resource_type.schema)
    unknown = removed_paths(obj, pruned)
    admitted = schemas.apply_defaults(pruned, resource_type.schema)
    problems = schemas.validate(admitted, resource_type.schema)
    if problems:
        raise invalid(resource_type, obj["metadata"].get("name", ""), problems)
    return admitted, unknown


def unknown_fields_error(resource_type: ResourceType, unknown: list[str]) -> ApiError:
    kind, version = resource_type.kind, resource_type.version
    fields = ", ".join(f'unknown field "{path}"' for path in unknown)
    return ApiError(
        400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: {fields}'
    )


def removed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        paths = []
        for key, value in before.items():
            path = f"{prefix}.{key}" if prefix else key
            paths += [path] if key not in after else removed_paths(value, after[key], path)
        return paths
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            path
            for index, (b, a) in enumerate(zip(before, after, strict=True))
            for path in removed_paths(b, a, f"{prefix}[{index}]")
        ]
    return []


def require_custom_resource_writes(resource_type: ResourceType, patch_type: str) -> None:
    """The real server has no strategic merge patch for custom resources (415)."""
    if resource_type.crd is not None and patch_type == "strategic":
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )


def reregister(registry: Registry, crd: dict[str, Any]) -> None:
    """Replace what an updated CRD registered."""
    for old in registry.registered_by(crd["metadata"]["name"]):
        registry.remove(old.key)
    for custom_type in resource_types(crd):
        registry.add(custom_type)
