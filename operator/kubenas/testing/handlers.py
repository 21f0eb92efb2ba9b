"""The emulated API server's answers to resource requests: get, list and watch;
create, replace, patch and delete (one object or a collection); `status` and pods' `log`."""

from __future__ import annotations

import aiohttp.web
from kmock._internal import rendering

from kubenas.testing import protocol, streaming
from kubenas.testing.contract import ApiError, PodLogs
from kubenas.testing.protocol import NOT_FOUND, Route
from kubenas.testing.registry import ResourceType
from kubenas.testing.store import Store


class ResourceHandler:
    def __init__(self, *, store: Store, pod_logs: PodLogs | None) -> None:
        self.store = store
        self.pod_logs = pod_logs

    async def serve(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        resource_type = self.store.registry.find(group=route.group, version=route.version, plural=route.plural)
        if resource_type is None or (route.namespace is not None and not resource_type.namespaced):
            raise ApiError(404, "NotFound", NOT_FOUND)
        method = request.method.value
        if route.subresource == "log" and resource_type.key == "v1/pods" and method == "GET":
            return await self._serve_log(request, route)
        if route.subresource is not None and not (route.subresource == "status" and resource_type.has_status):
            raise ApiError(404, "NotFound", NOT_FOUND)
        if method == "GET":
            if request.params.get("watch") in ("true", "1"):
                return await self._serve_watch(request, resource_type, route)
            return self._serve_read(request, resource_type, route)
        if route.name is None and method == "POST":
            return await self._serve_create(request, resource_type, route)
        if route.name is None and method == "DELETE":
            return await self._serve_delete_collection(request, resource_type, route)
        if route.name is not None and method == "PUT":
            return await self._serve_replace(request, resource_type, route)
        if route.name is not None and method == "PATCH":
            return await self._serve_patch(request, resource_type, route)
        if route.name is not None and method == "DELETE":
            return await self._serve_delete(request, resource_type, route)
        raise ApiError(
            405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})"
        )

    def _serve_read(self, request: rendering.Request, resource_type: ResourceType, route: Route) -> aiohttp.web.Response:
        rows_object = protocol.table_rows_object(request)
        if route.name is not None:
            found = self.store.get(resource_type.key, namespace=route.namespace, name=route.name)
            if found is None:
                raise resource_type.not_found(route.name)
            if rows_object is None:
                return protocol.object_response(found)
            return protocol.object_response(
                protocol.as_table(
                    resource_type, [found], resource_version=found["metadata"]["resourceVersion"], include_object=rows_object
                )
            )
        items, resource_version = self.store.list(
            resource_type.key,
            namespace=route.namespace,
            label_selector=request.params.get("labelSelector"),
            field_selector=request.params.get("fieldSelector"),
        )
        if rows_object is None:
            return protocol.object_response(protocol.as_list(resource_type, items, resource_version=resource_version))
        return protocol.object_response(
            protocol.as_table(resource_type, items, resource_version=resource_version, include_object=rows_object)
        )

    async def _serve_watch(
        self, request: rendering.Request, resource_type: ResourceType, route: Route
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        field_selector = (
            ",".join(s for s in (params.get("fieldSelector"), route.name and f"metadata.name={route.name}") if s) or None
        )
        watch = streaming.WatchRequest(
            resource_type=resource_type,
            namespace=route.namespace,
            label_selector=params.get("labelSelector"),
            field_selector=field_selector,
            resource_version=params.get("resourceVersion"),
            timeout=protocol.number_param(request, "timeoutSeconds"),
            bookmarks=params.get("allowWatchBookmarks") in ("true", "1"),
            initial_events=params.get("sendInitialEvents") == "true",
            table_rows_object=protocol.table_rows_object(request),
        )
        assert request._raw_request is not None
        return await streaming.serve_watch(request._raw_request, store=self.store, watch=watch)

    async def _serve_create(
        self, request: rendering.Request, resource_type: ResourceType, route: Route
    ) -> aiohttp.web.Response:
        options = protocol.write_options(request)
        created = await self.store.create(
            resource_type.key, protocol.request_body(request), namespace=route.namespace, options=options
        )
        return protocol.object_response(created, status_code=201, warnings=options.warnings)

    async def _serve_replace(
        self, request: rendering.Request, resource_type: ResourceType, route: Route
    ) -> aiohttp.web.Response:
        assert route.name is not None
        options = protocol.write_options(request)
        body = protocol.request_body(request)
        replaced = await self.store.replace(
            resource_type.key,
            body,
            namespace=route.namespace,
            name=route.name,
            subresource=route.subresource,
            options=options,
        )
        return protocol.object_response(replaced, warnings=options.warnings)

    async def _serve_patch(
        self, request: rendering.Request, resource_type: ResourceType, route: Route
    ) -> aiohttp.web.Response:
        assert route.name is not None and request._raw_request is not None
        patch_type = protocol.PATCH_TYPES.get(request._raw_request.content_type)
        if patch_type is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {', '.join(protocol.PATCH_TYPES)}",
            )
        options = protocol.write_options(request)
        body = protocol.request_body(request, types=(dict, list))
        if patch_type == "apply" and self.store.get(resource_type.key, namespace=route.namespace, name=route.name) is None:
            created = await self.store.create(
                resource_type.key, body, namespace=route.namespace, options=options
            )  # server-side apply creates
            return protocol.object_response(created, status_code=201, warnings=options.warnings)
        patched = await self.store.patch(
            resource_type.key,
            namespace=route.namespace,
            name=route.name,
            patch=body,
            patch_type=patch_type,
            subresource=route.subresource,
            options=options,
        )
        return protocol.object_response(patched, warnings=options.warnings)

    async def _serve_delete(
        self, request: rendering.Request, resource_type: ResourceType, route: Route
    ) -> aiohttp.web.Response:
        assert route.name is not None
        propagation, options = protocol.delete_options(request, resource_type)
        preconditions = (request.data.get("preconditions") if isinstance(request.data, dict) else None) or {}
        current = self.store.get(resource_type.key, namespace=route.namespace, name=route.name)
        if current is not None and any(
            preconditions.get(key) not in (None, current["metadata"].get(key)) for key in ("uid", "resourceVersion")
        ):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource_type.group_resource} "{route.name}": the precondition does not hold',
            )
        deleted = await self.store.delete(
            resource_type.key, namespace=route.namespace, name=route.name, propagation=propagation, options=options
        )
        remaining = self.store.get(resource_type.key, namespace=route.namespace, name=route.name)
        return protocol.object_response(
            deleted, status_code=202 if remaining is not None and not options.dry_run else 200, warnings=options.warnings
        )

    async def _serve_delete_collection(
        self, request: rendering.Request, resource_type: ResourceType, route: Route
    ) -> aiohttp.web.Response:
        propagation, options = protocol.delete_options(request, resource_type)
        items, _ = self.store.list(
            resource_type.key,
            namespace=route.namespace,
            label_selector=request.params.get("labelSelector"),
            field_selector=request.params.get("fieldSelector"),
        )
        deleted = []
        for item in items:
            meta = item["metadata"]
            if (
                self.store.get(resource_type.key, namespace=meta.get("namespace"), name=meta["name"]) is not None
            ):  # an earlier cascade may have taken it
                deleted.append(
                    await self.store.delete(
                        resource_type.key,
                        namespace=meta.get("namespace"),
                        name=meta["name"],
                        propagation=propagation,
                        options=options,
                    )
                )
        return protocol.object_response(
            protocol.as_list(resource_type, deleted, resource_version=self.store.resource_version), warnings=options.warnings
        )

    async def _serve_log(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        assert route.name is not None and route.namespace is not None and request._raw_request is not None
        if self.store.get("v1/pods", namespace=route.namespace, name=route.name) is None:
            raise self.store.registry.get("v1/pods").not_found(route.name)
        if self.pod_logs is None:
            raise ApiError(503, "ServiceUnavailable", "no kubelet runs the pods of this cluster")
        container = request.params.get("container")
        tail = protocol.number_param(request, "tailLines")
        tail_lines = None if tail is None else int(tail)
        if request.params.get("follow") in ("true", "1"):
            return await streaming.serve_followed_log(
                request._raw_request,
                store=self.store,
                logs=self.pod_logs,
                namespace=route.namespace,
                name=route.name,
                container=container,
                tail_lines=tail_lines,
            )
        text = self.pod_logs.read_log(namespace=route.namespace, name=route.name, container=container, tail_lines=tail_lines)
        return aiohttp.web.Response(text=text, content_type="text/plain")
