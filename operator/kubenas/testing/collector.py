"""Deletion and owner-reference garbage collection, as kube-controller-manager's
garbage collector and the namespace and CRD finalizers do it, but synchronously: by
the time a DELETE returns, what it cascades to is gone or marked for deletion.

- Background: the object goes (once its finalizers are gone), then its dependents.
- Foreground: the object is marked with the `foregroundDeletion` finalizer and stays
  until its dependents (deleted foreground in turn) are gone.
- Orphan: the dependents lose their ownerReference to the object, then it goes.
A dependent whose owners (by uid) do not exist is collected shortly after it is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubenas.testing import crds, metadata
from kubenas.testing.metadata import json_copy
from kubenas.testing.objects import NAMESPACES, Objects, owner_uids
from kubenas.testing.registry import ResourceType


FOREGROUND_FINALIZER = "foregroundDeletion"


class Collector:
    def __init__(self, *, objects: Objects) -> None:
        self._objects = objects

    def delete(self, resource_type: ResourceType, current: dict[str, Any], *, propagation: str) -> dict[str, Any]:
        """Delete as a DELETE request does; the object as removed, or as marked for deletion."""
        if current["metadata"].get("deletionTimestamp"):
            return current
        uid = current["metadata"]["uid"]
        if propagation == "Orphan":
            for dependent in self._objects.dependents(uid):
                self._drop_owner_references(dependent, lambda ref: ref.get("uid") == uid)
        if resource_type.storage == NAMESPACES:
            for obj in self._objects.in_namespace(current["metadata"]["name"]):
                if self._objects.by_uid(obj["metadata"]["uid"]) is not None:
                    self.delete(self._objects.type_of(obj), obj, propagation="Background")
        finalizers = list(current["metadata"].get("finalizers") or [])
        foreground = propagation == "Foreground" and bool(self._objects.dependents(uid))
        if foreground:
            finalizers.append(FOREGROUND_FINALIZER)
        if not finalizers:
            return self.remove(resource_type, current)
        marked = json_copy(current)
        marked["metadata"] |= {
            "deletionTimestamp": metadata.now(),
            "deletionGracePeriodSeconds": 0,
            "finalizers": finalizers,
        }
        stored = self._objects.commit(resource_type, marked, "MODIFIED", previous=current)
        if foreground:
            for dependent in self._objects.dependents(uid):
                self.delete(self._objects.type_of(dependent), dependent, propagation="Foreground")
            self._release_foreground(uid)
        return self._objects.by_uid(uid) or stored

    def remove(self, resource_type: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Take the object out of the store, then collect what it owned."""
        if resource_type.key == crds.CRD_RESOURCE:
            self._remove_custom_resources(obj["metadata"]["name"])
        removed = self._objects.commit(resource_type, json_copy(obj), "DELETED")
        uid = removed["metadata"]["uid"]
        for dependent in self._objects.dependents(uid):
            self._collect(dependent)
        for owner in owner_uids(removed):
            self._release_foreground(owner)
        return removed

    def update(self, resource_type: ResourceType, current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Commit a change; a deleting object left without finalizers then goes."""
        stored = self._objects.commit(resource_type, new, "MODIFIED", previous=current)
        if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get("finalizers"):
            self.remove(resource_type, stored)
        return stored

    def check_owners_later(self, obj: dict[str, Any]) -> None:
        """Collect the object soon if none of its owners exists (as the real collector would)."""
        if owner_uids(obj):
            uid = obj["metadata"]["uid"]
            asyncio.get_running_loop().call_soon(self._collect_by_uid, uid)

    def _collect_by_uid(self, uid: str) -> None:
        if (obj := self._objects.by_uid(uid)) is not None:
            self._collect(obj)

    def _collect(self, dependent: dict[str, Any]) -> None:
        owners = owner_uids(dependent)
        existing = {owner for owner in owners if self._objects.by_uid(owner) is not None}
        if not owners or dependent["metadata"].get("deletionTimestamp"):
            return
        if not existing:
            self.delete(self._objects.type_of(dependent), dependent, propagation="Background")
        elif existing != owners:
            self._drop_owner_references(dependent, lambda ref: ref.get("uid") not in existing)

    def _release_foreground(self, owner_uid: str) -> None:
        owner = self._objects.by_uid(owner_uid)
        if owner is None or self._objects.dependents(owner_uid):
            return
        finalizers = owner["metadata"].get("finalizers") or []
        if FOREGROUND_FINALIZER in finalizers:
            released = json_copy(owner)
            released["metadata"]["finalizers"] = [f for f in finalizers if f != FOREGROUND_FINALIZER]
            self.update(self._objects.type_of(owner), owner, released)

    def _drop_owner_references(self, dependent: dict[str, Any], dropped: Callable[[dict[str, Any]], bool]) -> None:
        changed = json_copy(dependent)
        kept = [ref for ref in changed["metadata"].get("ownerReferences") or [] if not dropped(ref)]
        changed["metadata"].pop("ownerReferences", None)
        changed["metadata"] |= {"ownerReferences": kept} if kept else {}
        self.update(self._objects.type_of(dependent), dependent, changed)

    def _remove_custom_resources(self, crd_name: str) -> None:
        """A deleted CRD takes its custom resources with it (finalizers or not) and stops serving them."""
        custom_types = self._objects.registry.registered_by(crd_name)
        for storage in {custom_type.storage for custom_type in custom_types}:
            storage_type = self._objects.registry.for_storage(storage)
            assert storage_type is not None
            for obj in list(self._objects.of(storage).values()):
                self.remove(storage_type, obj)
        for custom_type in custom_types:
            self._objects.registry.remove(custom_type.key)
        for storage in {custom_type.storage for custom_type in custom_types}:
            self._objects.watches.end(storage)
