"""The emulated Kubernetes API server: kmock's KubernetesScaffold (its request model and
history, discovery routes, error rendering, and `kmock.Server` for the TCP port) in front
of kubenas.testing.Store instead of kmock's KubernetesEmulator, whose object store keeps
every version of every object and scans them all per request.

Two departures from kmock: requests are parsed here (kmock 0.8's path parser fails on
`/api/v1/namespaces`), and only the last `request_history` requests are kept (kmock
keeps every one it served, which grows without bound in a long-running cluster).
"""

from __future__ import annotations

import json
import logging

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

from kubenas.testing import discovery, protocol
from kubenas.testing.contract import ApiError, PodLogs
from kubenas.testing.handlers import ResourceHandler
from kubenas.testing.openapi import OpenApi
from kubenas.testing.store import Store

log = logging.getLogger(__name__)


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesScaffold):
    store: Store
    pod_logs: PodLogs | None = None  # what serves pods/NAME/log: the fake kubelet
    request_history: int = 300
    # Who called what: (client, verb, group, resource[/subresource]) as RBAC names them,
    # client being the User-Agent's product ("kopf", "kubenas-operator", "kubectl"…).
    # A set, so it stays small however long the cluster runs; tests check RBAC with it.
    access: set[tuple[str, str, str, str]] = attrs.field(factory=set, init=False)
    _openapi: OpenApi = attrs.field(init=False)
    _resources_handler: ResourceHandler = attrs.field(init=False)
    _served: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._resources = self.store.registry.discovery  # the scaffold's `/` lists what the registry serves
        self._openapi = OpenApi(registry=self.store.registry)
        self._resources_handler = ResourceHandler(store=self.store, pod_logs=self.pod_logs)
        for probe in ("/healthz", "/livez", "/readyz"):
            self.fallback["get", probe] << b"ok"

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            request = await self._parse(raw_request)
            self._remember(request)
            return await self._handle(request)
        except ApiError as error:
            return protocol.error_response(error)
        except kmock.KubernetesNotFoundError:  # kmock's answer for paths nothing serves
            return protocol.error_response(ApiError(404, "NotFound", protocol.NOT_FOUND))
        except Exception as error:
            log.exception("%s %s failed", raw_request.method, raw_request.path_qs)
            return await self._render_error(error)

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> rendering.Request:
        body = await raw_request.read()
        text = body.decode("utf-8", errors="replace")
        route = protocol.parse_route(raw_request.path)
        self._served += 1
        return rendering.Request(
            id=self._served,
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=text,
            data=protocol.decode_body(text, raw_request.content_type),
            action=protocol.request_action(raw_request.method, route, raw_request.query.get("watch")),
            resource=None if route is None else kmock.resource(route.group, route.version, route.plural),
            namespace=None if route is None else route.namespace,
            name=None if route is None else route.name,
            subresource=None if route is None else route.subresource,
        )

    def _remember(self, request: rendering.Request) -> None:
        if request.resource is not None:
            self.access.add(_access(request))
        self._requests.append(request)
        if len(self._requests) > 2 * self.request_history:  # trimmed in batches: deleting from a list's head is O(n)
            del self._requests[: -self.request_history]
            for reaction in self._payloads:
                del reaction._requests[: -self.request_history]

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            return self._serve_openapi(path)
        if path in ("/api", "/apis") and protocol.wants_aggregated_discovery(request.headers.get("Accept", "")):
            body = discovery.aggregated_discovery(self.store.registry, core=path == "/api")
            return aiohttp.web.Response(
                body=json.dumps(body).encode(), headers={"Content-Type": discovery.AGGREGATED_CONTENT_TYPE}
            )
        route = protocol.parse_route(path)
        if route is None:
            return await super()._handle(request)  # discovery and probes, through kmock's reactions
        return await self._resources_handler.serve(request, route)

    # --- discovery, as the scaffold routes it ---------------------------------------------

    async def _serve_apis(self, request: rendering.Request) -> rendering.Payload:
        return discovery.api_group_list(self.store.registry)

    async def _serve_group(self, request: rendering.Request) -> rendering.Payload:
        group = request.url.path.strip("/").split("/")[1]
        if (document := discovery.api_group(self.store.registry, group)) is None:
            raise ApiError(404, "NotFound", protocol.NOT_FOUND)
        return document

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        parts = request.url.path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        if (document := discovery.api_resource_list(self.store.registry, group, version)) is None:
            raise ApiError(404, "NotFound", protocol.NOT_FOUND)
        return document

    async def _serve_server_version(self, request: rendering.Request) -> rendering.Payload:
        return discovery.SERVER_VERSION

    def _serve_openapi(self, path: str) -> aiohttp.web.Response:
        if path.rstrip("/") == "/openapi/v3":
            return aiohttp.web.json_response(self._openapi.index())
        document = self._openapi.document(path.removeprefix("/openapi/v3/"))
        if document is None:
            raise ApiError(404, "NotFound", protocol.NOT_FOUND)
        return aiohttp.web.Response(body=document, content_type="application/json")


def _access(request: rendering.Request) -> tuple[str, str, str, str]:
    client = (request.headers.get("User-Agent") or "").split("/")[0]
    if request.method == "GET":
        verb = "watch" if request.params.get("watch") in ("1", "true") else "get" if request.name else "list"
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete" if request.name else "deletecollection"}.get(request.method, request.method.lower())
    resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    return client, verb, request.resource.group, resource
