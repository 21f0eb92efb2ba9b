"""Where the emulated cluster's objects live: per storage (group, plural), keyed by
(namespace, name), with indexes by uid and by owner uid, under one resourceVersion
counter. Every change is published to the watches. Stored objects are snapshots that
are replaced, never mutated, so events and indexes can share them."""

from __future__ import annotations

import collections
from typing import Any

from kubenas.testing.registry import Registry, ResourceType
from kubenas.testing.watching import ChangeEvent, Storage, Watches

Key = tuple[str | None, str]  # (namespace, name); namespace None for cluster-scoped objects
NAMESPACES: Storage = ("", "namespaces")


def owner_uids(obj: dict[str, Any] | None) -> set[str]:
    if obj is None:
        return set()
    references = obj["metadata"].get("ownerReferences") or []
    return {ref["uid"] for ref in references if isinstance(ref, dict) and ref.get("uid")}


class Objects:
    def __init__(self, *, registry: Registry, watches: Watches) -> None:
        self.registry = registry
        self.watches = watches
        self._stored: dict[Storage, dict[Key, dict[str, Any]]] = collections.defaultdict(dict)
        self._locations: dict[str, tuple[Storage, Key]] = {}  # uid -> where the object is
        self._dependents: dict[str, set[str]] = collections.defaultdict(set)  # owner uid -> dependent uids
        self._resource_version = 0

    @property
    def resource_version(self) -> str:
        return str(self._resource_version)

    def of(self, storage: Storage) -> dict[Key, dict[str, Any]]:
        """The live mapping of one storage's objects: read it, do not change it."""
        return self._stored[storage]

    def lookup(self, resource_type: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._stored[resource_type.storage].get((namespace if resource_type.namespaced else None, name))

    def by_uid(self, uid: str) -> dict[str, Any] | None:
        location = self._locations.get(uid)
        return None if location is None else self._stored[location[0]].get(location[1])

    def type_of(self, obj: dict[str, Any]) -> ResourceType:
        storage, _ = self._locations[obj["metadata"]["uid"]]
        resource_type = self.registry.for_storage(storage)
        assert resource_type is not None, f"objects of {storage} outlived their resource type"
        return resource_type

    def dependents(self, uid: str) -> list[dict[str, Any]]:
        """The objects whose ownerReferences name `uid`."""
        return [obj for dependent in list(self._dependents.get(uid, ())) if (obj := self.by_uid(dependent)) is not None]

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return [obj for objects in self._stored.values() for (ns, _), obj in objects.items() if ns == namespace]

    def commit(
        self, resource_type: ResourceType, obj: dict[str, Any], event_type: str, *, previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store a prepared object under the next resourceVersion, or remove it (DELETED), and tell the watchers."""
        self._resource_version += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._resource_version)
        key = (meta.get("namespace"), meta["name"])
        removed = event_type == "DELETED"
        if removed:
            del self._stored[resource_type.storage][key]
            del self._locations[meta["uid"]]
        else:
            self._stored[resource_type.storage][key] = obj
            self._locations[meta["uid"]] = (resource_type.storage, key)
        self._index_owners(
            meta["uid"], before=owner_uids(obj if removed else previous), after=set() if removed else owner_uids(obj)
        )
        event = ChangeEvent(
            resource_version=self._resource_version,
            storage=resource_type.storage,
            type=event_type,
            obj=obj,
            previous=previous,
        )
        self.watches.publish(event)
        return obj

    def _index_owners(self, uid: str, *, before: set[str], after: set[str]) -> None:
        for owner in before - after:
            self._dependents[owner].discard(uid)
            if not self._dependents[owner]:
                del self._dependents[owner]
        for owner in after - before:
            self._dependents[owner].add(uid)
