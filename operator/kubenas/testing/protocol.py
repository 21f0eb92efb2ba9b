"""The HTTP side of the Kubernetes API: resource paths, request bodies and options,
Status objects for errors, Warning headers, lists and Tables for kubectl's `get`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import aiohttp.web
import yaml
from kmock._internal import enums, rendering

from kubenas.testing import tables
from kubenas.testing.contract import ApiError
from kubenas.testing.registry import ResourceType
from kubenas.testing.writes import WriteOptions

JOBS_ORPHAN_WARNING = (
    "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them "
    "or set propagationPolicy=Orphan to suppress this warning"
)
NOT_FOUND = "the server could not find the requested resource"
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Route:
    """A resource URL: /api/v1/namespaces/NS/pods/NAME/log, /apis/G/V/PLURAL..."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_route(path: str) -> Route | None:
    """The resource a path addresses, or None for discovery and other non-resource paths."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    # /namespaces/NAME/status and /finalize are subresources of a namespace, not a namespaced collection.
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    return Route(
        group=group,
        version=version,
        plural=rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
    )


def decode_body(text: str, content_type: str) -> Any:
    """The request body as JSON (YAML for server-side apply); None when empty; 400 when malformed."""
    if content_type == "application/vnd.kubernetes.protobuf":
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "this emulated API server reads JSON and YAML, not protobuf: use `kubectl apply -f` rather than `kubectl create <kind>`",
        )
    if not text.strip():
        return None
    try:
        return yaml.safe_load(text) if content_type == "application/apply-patch+yaml" else json.loads(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ApiError(400, "BadRequest", f"the request body is not valid: {error}") from None


def status(error: ApiError) -> dict[str, Any]:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": error.message,
        "reason": error.reason,
        "code": error.status,
    }
    return body | ({"details": error.details} if error.details else {})


def error_response(error: ApiError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(status(error), status=error.status)


def object_response(body: Any, *, status_code: int = 200, warnings: list[str] | None = None) -> aiohttp.web.Response:
    response = aiohttp.web.json_response(body, status=status_code)
    for warning in warnings or []:
        response.headers.add("Warning", f"299 - {json.dumps(warning)}")
    return response


def _accepted(accept: str) -> list[dict[str, str]]:
    """The parameters of each media type of an Accept header: `as`, `g`, `v`..."""
    return [dict(param.strip().partition("=")[::2] for param in part.split(";")[1:]) for part in accept.split(",")]


def table_rows_object(request: rendering.Request) -> str | None:
    """For a request asking for a Table (kubectl get), what its rows carry: the `includeObject`
    parameter, Metadata by default; None when the request wants objects."""
    accept = request.headers.get("Accept", "")
    if not any(params.get("as") == "Table" and params.get("g") == "meta.k8s.io" for params in _accepted(accept)):
        return None
    include_object = request.params.get("includeObject") or "Metadata"
    if include_object not in ("Metadata", "Object", "None"):
        raise ApiError(400, "BadRequest", f'unrecognized includeObject value: "{include_object}"')
    return include_object


def wants_aggregated_discovery(accept: str) -> bool:
    return any(params.get("as") == "APIGroupDiscoveryList" and params.get("v") == "v2" for params in _accepted(accept))


def as_table(
    resource_type: ResourceType, objects: list[dict[str, Any]], *, resource_version: str, include_object: str
) -> dict[str, Any]:
    columns = list(resource_type.printer_columns) if resource_type.crd else tables.builtin_columns(resource_type.kind)
    table = tables.to_table(objects, columns=columns, kind=resource_type.kind, include_object=include_object)
    table.setdefault("metadata", {})["resourceVersion"] = resource_version
    return table


def as_list(resource_type: ResourceType, items: list[dict[str, Any]], *, resource_version: str) -> dict[str, Any]:
    return {
        "kind": f"{resource_type.kind}List",
        "apiVersion": resource_type.api_version,
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    }


def watch_line(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"


def bookmark(resource_type: ResourceType, resource_version: str, *, initial_events_end: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if initial_events_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": resource_type.kind, "apiVersion": resource_type.api_version, "metadata": meta}


def request_action(method: str, route: Route | None, watch: str | None) -> enums.action | None:
    """The Kubernetes verb, for kmock's request assertions."""
    if route is None:
        return None
    if method == "GET":
        return (
            enums.action.WATCH if watch in ("true", "1") else enums.action.LIST if route.name is None else enums.action.FETCH
        )
    return {
        "POST": enums.action.CREATE,
        "PUT": enums.action.UPDATE,
        "PATCH": enums.action.UPDATE,
        "DELETE": enums.action.DELETE,
    }.get(method)


def number_param(request: rendering.Request, name: str) -> float | None:
    """A numeric query parameter (timeoutSeconds, tailLines); 400 when it is not a number."""
    text = request.params.get(name)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ApiError(400, "BadRequest", f'{name}: Invalid value: "{text}": must be a number') from None


def request_body(request: rendering.Request, *, types: tuple[type, ...] = (dict,)) -> Any:
    if not isinstance(request.data, types):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return request.data


def write_options(request: rendering.Request) -> WriteOptions:
    assert request._raw_request is not None
    field_validation = request.params.get("fieldValidation") or "Warn"
    if field_validation not in ("Strict", "Warn", "Ignore"):
        raise ApiError(
            400,
            "BadRequest",
            f'fieldValidation: Unsupported value: "{field_validation}": supported values: "Ignore", "Strict", "Warn"',
        )
    return WriteOptions(dry_run="All" in request._raw_request.query.getall("dryRun", []), field_validation=field_validation)


def delete_options(request: rendering.Request, resource_type: ResourceType) -> tuple[str, WriteOptions]:
    """The propagation policy and options of a DELETE, from its DeleteOptions body or query.
    Like the real server, batch/v1 Jobs orphan their pods unless told otherwise."""
    body = request.data if isinstance(request.data, dict) else {}
    options = write_options(request)
    options.dry_run = options.dry_run or "All" in (body.get("dryRun") or [])
    propagation = body.get("propagationPolicy") or request.params.get("propagationPolicy")
    if propagation is None and body.get("orphanDependents") is not None:
        propagation = "Orphan" if body["orphanDependents"] else "Background"
    if propagation is None and resource_type.key == "batch/v1/jobs":
        options.warnings.append(JOBS_ORPHAN_WARNING)
        propagation = "Orphan"
    return propagation or "Background", options
