"""The emulated API server's object store (implements contract.ObjectStore): the API
semantics of create, get, list, replace, patch, delete and watch over `Objects` (the
storage and its indexes), `Watches` (history and watchers) and the `Collector`
(deletion and garbage collection). What leaves the store is a copy, except from
`stream()`, whose events share the stored snapshots for the HTTP server to serialize.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from kubenas.testing import crds, metadata, patches, writes
from kubenas.testing.collector import Collector
from kubenas.testing.contract import ApiError
from kubenas.testing.metadata import json_copy
from kubenas.testing.objects import NAMESPACES, Objects
from kubenas.testing.registry import Registry, ResourceType
from kubenas.testing.selectors import FieldSelector, LabelSelector
from kubenas.testing.watching import Watches
from kubenas.testing.writes import WriteOptions

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public")
PATCHERS = {
    "merge": patches.merge_patch,
    "json": patches.json_patch,
    "strategic": patches.strategic_merge_patch,
    "apply": patches.strategic_merge_patch,
}


class Store:
    def __init__(self, *, history_limit: int = 10_000, watch_queue_size: int = 1_000) -> None:
        self.registry = Registry()
        self.watches = Watches(history_limit=history_limit, queue_size=watch_queue_size)
        self.objects = Objects(registry=self.registry, watches=self.watches)
        self.collector = Collector(objects=self.objects)
        for name in INITIAL_NAMESPACES:
            namespace = self._prepare_create(
                self.registry.get("v1/namespaces"), {"metadata": {"name": name}}, None, WriteOptions()
            )
            self.objects.commit(self.registry.get("v1/namespaces"), namespace, "ADDED")

    @property
    def resource_version(self) -> str:
        return self.objects.resource_version

    # --- ObjectStore -------------------------------------------------------------------

    async def create(
        self, resource: str, obj: dict, *, namespace: str | None = None, options: WriteOptions | None = None
    ) -> dict:
        resource_type = self.registry.get(resource)
        options = options or WriteOptions()
        prepared = self._prepare_create(resource_type, obj, namespace, options)
        if options.dry_run:
            return self._present(resource_type, prepared)
        stored = self.objects.commit(resource_type, prepared, "ADDED")
        if resource == crds.CRD_RESOURCE:
            for custom_type in crds.resource_types(stored):
                self.registry.add(custom_type)
        self.collector.check_owners_later(stored)
        return self._present(resource_type, stored)

    def get(self, resource: str, *, namespace: str | None, name: str) -> dict | None:
        resource_type = self.registry.get(resource)
        stored = self.objects.lookup(resource_type, namespace, name)
        return None if stored is None else self._present(resource_type, stored)

    def list(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        resource_type = self.registry.get(resource)
        labels, fields = LabelSelector.parse(label_selector), FieldSelector.parse(field_selector)
        objects = self.objects.of(resource_type.storage)
        namespace = namespace if resource_type.namespaced else None
        if (name := fields.exact_name()) is not None and (namespace is not None or not resource_type.namespaced):
            candidates = [objects[(namespace, name)]] if (namespace, name) in objects else []
        else:
            candidates = [obj for (ns, _), obj in objects.items() if namespace is None or ns == namespace]
        selected = [obj for obj in candidates if labels.matches(obj) and fields.matches(obj)]
        selected.sort(key=lambda obj: (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
        return [self._present(resource_type, obj) for obj in selected], self.resource_version

    async def replace(
        self,
        resource: str,
        obj: dict,
        *,
        namespace: str | None,
        name: str,
        subresource: str | None = None,
        options: WriteOptions | None = None,
    ) -> dict:
        """PUT: the whole object (or its status); 409 Conflict when its resourceVersion is stale."""
        resource_type = self.registry.get(resource)
        current = self._existing(resource_type, namespace, name)
        desired = json_copy(obj)
        desired_metadata = desired.get("metadata") if isinstance(desired.get("metadata"), dict) else {}
        if desired_metadata.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({desired_metadata['name']}) does not match the name on the URL ({name})",
            )
        writes.check_precondition(resource_type, current, desired_metadata.get("resourceVersion"))
        return await self._update(
            resource_type, current, desired, subresource=subresource, options=options or WriteOptions()
        )

    async def patch(
        self,
        resource: str,
        *,
        namespace: str | None,
        name: str,
        patch: dict | list,
        patch_type: str = "merge",
        subresource: str | None = None,
        resource_version: str | None = None,
        options: WriteOptions | None = None,
    ) -> dict:
        resource_type = self.registry.get(resource)
        crds.require_custom_resource_writes(resource_type, patch_type)
        current = self._existing(resource_type, namespace, name)
        patched = PATCHERS[patch_type](json_copy(current), json_copy(patch))
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patch does not leave an object")
        patched_metadata = patched.get("metadata") if isinstance(patched.get("metadata"), dict) else {}
        writes.check_precondition(resource_type, current, resource_version or patched_metadata.get("resourceVersion"))
        return await self._update(
            resource_type, current, patched, subresource=subresource, options=options or WriteOptions()
        )

    async def delete(
        self,
        resource: str,
        *,
        namespace: str | None,
        name: str,
        propagation: str = "Background",
        options: WriteOptions | None = None,
    ) -> dict | None:
        resource_type = self.registry.get(resource)
        current = self._existing(resource_type, namespace, name)
        if resource_type.storage == NAMESPACES and name in INITIAL_NAMESPACES:
            raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        if options is not None and options.dry_run:
            return self._present(resource_type, current)
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise ApiError(
                400,
                "BadRequest",
                f'propagationPolicy: Unsupported value: "{propagation}": supported values: "Foreground", "Background", "Orphan"',
            )
        return self._present(resource_type, self.collector.delete(resource_type, current, propagation=propagation))

    def watch(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[dict]:
        return self._copied_events(
            self.stream(
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                resource_version=resource_version,
            )
        )

    # --- for the HTTP API server --------------------------------------------------------

    def stream(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
    ) -> AsyncGenerator[tuple[str, dict], None]:
        """Watch events as (type, object) with objects shared, not copied: do not mutate them.
        ApiError 410 when resource_version is too old or when the consumer falls behind."""
        resource_type = self.registry.get(resource)
        return self.watches.stream(
            storage=resource_type.storage,
            api_version=resource_type.api_version,
            objects=self.objects.of(resource_type.storage),
            namespace=namespace if resource_type.namespaced else None,
            label_selector=label_selector,
            field_selector=field_selector,
            resource_version=resource_version,
        )

    def close(self) -> None:
        """End every watch; later watches end at once."""
        self.watches.close()

    # --- internals ---------------------------------------------------------------------

    def _prepare_create(
        self, resource_type: ResourceType, obj: dict, namespace: str | None, options: WriteOptions
    ) -> dict[str, Any]:
        body = writes.body_of(obj)
        meta = body["metadata"]
        namespace = writes.namespace_for(resource_type, namespace, meta.get("namespace"))
        while not meta.get("name") and meta.get("generateName"):
            candidate = metadata.generated_name(meta["generateName"])
            meta["name"] = candidate if self.objects.lookup(resource_type, namespace, candidate) is None else None
        if namespace is not None and self.objects.of(NAMESPACES).get((None, namespace)) is None:
            raise ApiError(
                404, "NotFound", f'namespaces "{namespace}" not found', details={"name": namespace, "kind": "namespaces"}
            )
        if meta.get("name") and self.objects.lookup(resource_type, namespace, meta["name"]) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource_type.group_resource} "{meta["name"]}" already exists',
                details=resource_type.describe(meta["name"]),
            )
        return writes.prepare_create(resource_type, body, namespace=namespace, options=options)

    async def _update(
        self,
        resource_type: ResourceType,
        current: dict[str, Any],
        desired: dict[str, Any],
        *,
        subresource: str | None,
        options: WriteOptions,
    ) -> dict:
        new = writes.prepare_update(resource_type, current, desired, subresource=subresource, options=options)
        if new == current or options.dry_run:
            return self._present(resource_type, new)  # a no-op write keeps its resourceVersion, as on a real server
        stored = self.collector.update(resource_type, current, new)
        if resource_type.key == crds.CRD_RESOURCE and self.objects.by_uid(stored["metadata"]["uid"]) is not None:
            crds.reregister(self.registry, stored)
        self.collector.check_owners_later(stored)
        return self._present(resource_type, stored)

    def _existing(self, resource_type: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        found = self.objects.lookup(resource_type, namespace, name)
        if found is None:
            raise resource_type.not_found(name)
        return found

    @staticmethod
    def _present(resource_type: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        presented = json_copy(obj)
        presented["apiVersion"] = resource_type.api_version
        return presented

    @staticmethod
    async def _copied_events(events: AsyncGenerator[tuple[str, dict], None]) -> AsyncIterator[dict]:
        async with contextlib.aclosing(events):
            async for event_type, obj in events:
                yield {"type": event_type, "object": json_copy(obj)}
