"""The in-process interface between the emulated API server's object store and the
controllers that run beside it (Job controller, fake kubelet).

Resources are named by strings "<group>/<version>/<plural>", the core group being
empty: "v1/pods", "v1/events", "batch/v1/jobs", "kubenas.io/v1alpha1/nastrials".
Objects are plain JSON dicts; every method returns deep copies the caller may keep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol


class ApiError(Exception):
    """A Kubernetes-style failure: HTTP status, reason (e.g. "NotFound", "Conflict",
    "AlreadyExists", "Invalid", "Gone") and a message naming the object or field."""

    def __init__(self, status: int, reason: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details or {}


class ObjectStore(Protocol):
    """What the emulated API server keeps, as seen by in-process controllers.

    Writes go through the same path as HTTP requests (metadata, resourceVersion,
    validation, watch events, garbage collection), so controllers behave as API clients.
    """

    async def create(self, resource: str, obj: dict, *, namespace: str | None = None) -> dict:
        """Create; metadata.generateName honoured; ApiError 409 AlreadyExists."""

    def get(self, resource: str, *, namespace: str | None, name: str) -> dict | None:
        """The object, or None."""

    def list(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        """(items, the list's resourceVersion); namespace None lists all namespaces."""

    async def patch(
        self,
        resource: str,
        *,
        namespace: str | None,
        name: str,
        patch: dict | list,
        patch_type: str = "merge",  # "merge" (RFC 7386) or "json" (RFC 6902)
        subresource: str | None = None,  # "status" changes status only; None changes all but status
        resource_version: str | None = None,  # precondition: 409 Conflict when stale
    ) -> dict:
        """Patch; ApiError 404, 409, 422 (failed JSON-patch test or invalid result)."""

    async def delete(
        self, resource: str, *, namespace: str | None, name: str, propagation: str = "Background"
    ) -> dict | None:
        """Delete (or mark with deletionTimestamp while finalizers remain); dependents
        are garbage-collected through ownerReferences. ApiError 404."""

    def watch(
        self,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
    ) -> AsyncIterator[dict]:
        """Events {"type": ADDED|MODIFIED|DELETED, "object": {...}}: with resource_version,
        those after it (ApiError 410 Gone when it is older than the kept history); without,
        ADDED for every existing object first, then live events. Ends when the store closes."""


class PodLogs(Protocol):
    """What the kubelet offers the API server for GET .../pods/NAME/log."""

    def read_log(self, *, namespace: str, name: str, container: str | None = None, tail_lines: int | None = None) -> str:
        """The container's stdout and stderr so far; ApiError 404 for an unknown pod."""
